"""Measure what loading a model and one generation add to a fresh process's resident memory.

Each measurement runs in a new interpreter, so nothing an earlier load left behind (imports,
allocator arenas, cached kernels) is counted or hidden. Before the baseline is taken the child
imports torch and runs a few small fp32, bf16 and fp16 operations (linear, softmax, attention,
embedding), so torch's own start-up is not counted: what remains is the model and the
transformers runtime it needs. Then it loads each model with the real :class:`Engine` (from
the HF cache, on CPU), generates one reply through the engine's streaming path, and reports
the resident set size (RSS, as ``psutil`` reads it) after each step.

Command line (prints one JSON object)::

    python -m chatwidget.testing.memory_probe --cache DIR --model ORG/NAME:DTYPE [...] \
        [--new-tokens 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The prompt of the measured generation (the engine's chat template wraps it).
PROMPT = "Hello! How can I help you today?"


@dataclass(frozen=True)
class Step:
    """One model's load and generation, measured in the probe process."""

    repo_id: str
    dtype: str
    load_bytes: int  # RSS increase over the load
    generate_bytes: int  # further RSS increase over the generation
    prompt_tokens: int
    new_tokens: int

    @property
    def total_bytes(self) -> int:
        """RSS increase after the load plus the generation."""
        return self.load_bytes + self.generate_bytes

    @property
    def context_tokens(self) -> int:
        """Tokens in the KV cache at the end of the generation."""
        return self.prompt_tokens + self.new_tokens


@dataclass(frozen=True)
class Probe:
    """A probe run: the warmed baseline and each model's step, in order."""

    baseline_bytes: int
    steps: tuple[Step, ...]
    peak_bytes: int  # the process's RSS high-water mark at the end


def measure(
    cache_dir: Path | str,
    models: list[tuple[str, str]],
    *,
    new_tokens: int = 512,
    timeout_s: float = 600.0,
) -> Probe:
    """Run the probe in a fresh interpreter for ``models`` ([(repo_id, dtype)], in order)."""
    args = [sys.executable, "-m", "chatwidget.testing.memory_probe", "--cache", str(cache_dir)]
    for repo_id, dtype in models:
        args += ["--model", f"{repo_id}:{dtype}"]
    args += ["--new-tokens", str(new_tokens)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = tuple(Step(**step) for step in data["steps"])
    return Probe(data["baseline_bytes"], steps, data["peak_bytes"])


def _warm_torch() -> None:
    """Run the kernels a forward pass uses once per float dtype, at realistic sizes.

    The first matmul of a dtype initialises its math library (MKL for fp32, oneDNN for
    bf16/fp16: about 4 and 8 MB here); that is torch's start-up, not the model's.
    """
    import torch

    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            weight = torch.randn(512, 512, dtype=dtype)
            for tokens in (1, 16):
                x = torch.randn(tokens, 512, dtype=dtype)
                torch.softmax(torch.nn.functional.linear(x, weight).float(), dim=-1)
            q = torch.randn(1, 8, 16, 64, dtype=dtype)
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            torch.cat([q, q], dim=-2)
            torch.nn.functional.embedding(torch.tensor([1, 2]), weight)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak() -> int:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(cache_dir: str, models: list[tuple[str, str]], new_tokens: int) -> dict[str, Any]:
    _warm_torch()
    from chatwidget.catalog import ModelSpec
    from chatwidget.engine import Engine
    from chatwidget.engine.types import GenerationSettings

    baseline = _rss()
    engine = Engine(cache_dir=cache_dir, memory_budget_bytes=1 << 50)
    steps = []
    for repo_id, dtype in models:
        before = _rss()
        engine.load(ModelSpec(repo_id, dtype=dtype))
        loaded = _rss()
        result = engine.generate(
            repo_id,
            [{"role": "user", "content": PROMPT}],
            GenerationSettings(max_new_tokens=new_tokens),
        )
        steps.append(
            {
                "repo_id": repo_id,
                "dtype": dtype,
                "load_bytes": loaded - before,
                "generate_bytes": _rss() - loaded,
                "prompt_tokens": result.usage.prompt_tokens,
                "new_tokens": result.usage.new_tokens,
            }
        )
    return {"baseline_bytes": baseline, "steps": steps, "peak_bytes": _peak()}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m chatwidget.testing.memory_probe``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="the HF cache holding the models")
    parser.add_argument(
        "--model", action="append", required=True, help="ORG/NAME:DTYPE, in load order"
    )
    parser.add_argument("--new-tokens", type=int, default=512)
    args = parser.parse_args(argv)
    models = [tuple(m.rsplit(":", 1)) for m in args.model]
    if any(len(m) != 2 for m in models):
        parser.error("--model takes ORG/NAME:DTYPE, e.g. demo/tiny-chat:bfloat16")
    pairs = [(m[0], m[1]) for m in models]
    print(json.dumps(_child(args.cache, pairs, args.new_tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
