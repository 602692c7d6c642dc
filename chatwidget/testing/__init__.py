"""Offline stand-ins for the Hugging Face Hub: a local HF-compatible hub and a tiny-model factory.

They are part of the product (the offline demo and the benchmarks use them), not only tests.
See :mod:`chatwidget.testing.hub` and :mod:`chatwidget.testing.models`.
"""

from chatwidget.testing.hub import Fault, LocalHub, RequestRecord, run_hub_process
from chatwidget.testing.models import (
    DEMO_GATED,
    DEMO_GATED_TOKEN,
    DEMO_REPOS,
    bench_model_path,
    build_demo_hub,
    build_model,
    build_weights_repo,
)

__all__ = [
    "DEMO_GATED",
    "DEMO_GATED_TOKEN",
    "DEMO_REPOS",
    "Fault",
    "LocalHub",
    "RequestRecord",
    "bench_model_path",
    "build_demo_hub",
    "build_model",
    "build_weights_repo",
    "run_hub_process",
]
