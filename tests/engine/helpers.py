"""Helpers for engine tests: plain transformers baselines and a forward-step gate."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TINY_A = "test-org/tiny-a"
TINY_B = "test-org/tiny-b"
TINY_C = "test-org/tiny-c"
NO_TEMPLATE = "test-org/no-template"
PICKLE_ONLY = "test-org/pickle-only"
SEEDS = {TINY_A: 0, TINY_B: 1, TINY_C: 2}
DEADLINE_S = 30.0
USER_TURN = [{"role": "user", "content": "Hello! How can I help you today?"}]


def plain_greedy_ids(
    cache: Path, repo_id: str, messages: list[dict[str, str]], max_new_tokens: int
) -> list[int]:
    """New token ids from a plain ``model.generate`` (greedy), with no engine involved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo_id, cache_dir=cache, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        repo_id, cache_dir=cache, local_files_only=True, dtype="auto", device_map="auto"
    )
    enc = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
    return [int(t) for t in out[0, enc["input_ids"].shape[-1] :]]


class StepGate:
    """A forward pre-hook that counts decoding steps and can hold one step until released.

    ``reached`` is set when step ``hold_at`` begins; that step then waits for ``release``.
    ``on_step`` runs at every step (used to raise inside ``generate``).
    """

    def __init__(self, hold_at: int | None = None, on_step: Callable[[int], None] | None = None):
        self.hold_at = hold_at
        self.on_step = on_step
        self.steps = 0
        self.threads: list[threading.Thread] = []  # objects: idents are reused
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, module: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        self.threads.append(threading.current_thread())
        if self.on_step is not None:
            self.on_step(self.steps)
        if self.steps == self.hold_at:
            self.reached.set()
            if not self.release.wait(DEADLINE_S):
                raise TimeoutError("the test never released the held step")

    def attach(self, model: Any) -> Any:
        """Register on ``model``; returns the handle (call ``.remove()`` to detach)."""
        return model.register_forward_pre_hook(self, with_kwargs=True)
