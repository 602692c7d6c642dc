"""Offline stand-ins for the Hugging Face Hub: a local HF-compatible hub and a tiny-model factory.

They are part of the product (the offline demo and the benchmarks use them), not only tests.
See :mod:`chatwidget.testing.hub` and :mod:`chatwidget.testing.models`.

Names are imported lazily, so ``python -m chatwidget.testing.hub`` does not import the module
twice (runpy warns when a package's ``__init__`` already imported the module it runs).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Fault": "hub",
    "LocalHub": "hub",
    "RequestRecord": "hub",
    "run_hub_process": "hub",
    "DEMO_GATED": "models",
    "DEMO_GATED_TOKEN": "models",
    "DEMO_REPOS": "models",
    "bench_model_path": "models",
    "build_demo_hub": "models",
    "build_model": "models",
    "build_weights_repo": "models",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatwidget.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"chatwidget.testing.{module}"), name)
