"""What streaming through the widget costs, against plain ``model.generate`` in the same run.

Three measurements, each side by side with its baseline, rounds alternating which runs first:

1. **Per-token overhead** on a tiny model that generates far above 250 tokens/s (and, for
   information, on the small size, near 250 tokens/s here): tokens/s of
   ``ChatWidget.send`` (from the call to the finished reply: chat template, context fitting,
   reply thread, streamer, deltas) against a plain greedy ``model.generate`` on the same
   weights and prompt, for the same number of new tokens, run in a worker thread as the
   engine runs it (goal: >= 0.97).
2. **Long conversations**: a whole turn (``regenerate``: history, context fitting, prefill,
   decoding, deltas) in a conversation of 1,000 messages, against ``model.generate`` on the
   very prompt the turn used (same prompt and new tokens), for a model whose 256-token
   context makes every turn trim, and for one whose 32,768-token context holds all 1,000
   messages (goal: <= 1.05).
3. **Bytes sent to the front end per streamed token**, counted on the comm (the JSON of every
   message, trait batches and deltas), over whole turns: in a fresh chat and at 1,000
   messages for both models (goal: <= 200).

Each ratio is the median over rounds of the paired ratio (both methods ran back to back under
the same load); the ratio of the best round of each, and of the CPU time the whole process
spent (all threads, the publisher's last batch included), are printed beside it: on a
crowded machine single rounds swing by tens of percent, CPU time much less.

The comm is recorded in-process: each message is serialized to JSON and signed (HMAC-SHA256)
as ipykernel's session would, so the kernel-side cost of sending is in the figures; the ZMQ
hop is not.

    .venv/bin/python bench/bench_widget_stream.py [--rounds 15] [--tokens 400] [--long-tokens 64]
"""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench-hf-home-")
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)

import argparse
import atexit
import hashlib
import hmac
import json
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    fresh_dir,
    in_worker_thread,
    print_table,
    rotating,
    run_hub_process,
    write_results,
)

from chatwidget.catalog import ModelSpec
from chatwidget.engine.context import fit_chat, token_counts
from chatwidget.engine.loader import LoadedModel
from chatwidget.engine.streaming import _apply_template, build_chat, context_length, encode_chat
from chatwidget.testing.conversations import seed_conversation
from chatwidget.testing.models import DEMO_TINY_REPO, build_model
from chatwidget.widget import ChatWidget

SMALL = "bench/small-chat"  # the small size: about 300 tok/s on 2 cores, near the 250 floor
SHORT = "bench/tiny-ctx256"  # every turn of a long conversation trims
LONG = "bench/tiny-ctx32k"  # 1,000 messages fit
CONTEXTS = {SHORT: 256, LONG: 32768}
PROMPT = "Please explain how a download manager shows progress for each file."
HISTORY = 1000
_KEY = b"bench-session-key"


class Comm:
    """Records what the kernel would send: JSON size, serialized and signed as ipykernel does."""

    def __init__(self, chat: ChatWidget) -> None:
        self.bytes = 0
        self.messages = 0
        self._lock = threading.Lock()
        chat.comm.publish_msg = self._publish

    def _publish(self, _msg_type: str, data: Any = None, **_: Any) -> None:
        raw = json.dumps(data, separators=(",", ":")).encode()
        hmac.new(_KEY, raw, hashlib.sha256).hexdigest()
        with self._lock:
            self.bytes += len(raw)
            self.messages += 1

    def take(self) -> int:
        with self._lock:
            sent, self.bytes = self.bytes, 0
            return sent


def build_hub(root: Path) -> None:
    build_model(root, DEMO_TINY_REPO, "tiny", seed=0)
    build_model(root, SMALL, "small", seed=0)
    for repo_id, context in CONTEXTS.items():
        folder = build_model(root, repo_id, "tiny", seed=1)
        for name, key in (
            ("config.json", "max_position_embeddings"),
            ("tokenizer_config.json", "model_max_length"),
        ):
            data = json.loads((folder / name).read_text())
            data[key] = context
            (folder / name).write_text(json.dumps(data))


#: CPU seconds of this process per method, per round (all threads: publisher, reader...).
CPU: dict[str, list[float]] = {}


def plain_generate(model: Any, enc: Any, tokens: int) -> tuple[list[int], float]:
    """New token ids and seconds of a plain greedy ``model.generate`` in a worker thread."""
    import torch

    def run() -> Any:
        with torch.inference_mode():
            return model.generate(**enc, do_sample=False, max_new_tokens=tokens)

    cpu = time.process_time()
    started = time.perf_counter()
    out = in_worker_thread(run)
    elapsed = time.perf_counter() - started
    CPU.setdefault("plain", []).append(time.process_time() - cpu)
    return [int(t) for t in out[0, enc["input_ids"].shape[-1] :]], elapsed


def loaded_of(chat: ChatWidget, repo_id: str) -> LoadedModel:
    model, tok = chat._runtime.engine.model_and_tokenizer(repo_id)
    return LoadedModel(ModelSpec(repo_id), model, tok, memory_bytes=0, device_map={})


def ready(url: str, cache: Path, repo_id: str, tokens: int) -> tuple[ChatWidget, Comm]:
    # A history file of its own (saving stays on, as for a user): a widget on a shared file
    # would restore the conversations an earlier measurement seeded and grow them.
    folder = tempfile.mkdtemp(prefix="bench-stream-history-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    history = Path(folder) / "history.sqlite3"
    chat = ChatWidget(models=[repo_id], endpoint=url, cache_dir=cache, history=history)
    chat.select_model(repo_id)
    if not chat.wait_until_idle(300):
        sys.exit(f"{repo_id} did not become ready")
    chat.set_settings(max_new_tokens=tokens, do_sample=False)
    return chat, Comm(chat)


def turn(chat: ChatWidget, comm: Comm, start: Callable[[], Any]) -> tuple[list[int], float, int]:
    """Run one reply: (its token ids, seconds from the call to the finished reply, bytes
    sent for the whole turn, the final trait batch included). It starts from quiet: the UI
    sent and the history saved (a new conversation made just before is not this turn's
    disk work; the turn's own writes, the user's message first, are in its time)."""
    assert chat.wait_until_idle(60)
    assert chat.history.flush(60)
    comm.take()
    cpu = time.process_time()
    started = time.perf_counter()
    handle = start()
    handle.wait(600)
    elapsed = time.perf_counter() - started
    assert chat.wait_until_idle(60)
    CPU.setdefault("widget", []).append(time.process_time() - cpu)  # the last publish too
    result = handle.result
    assert result is not None
    return list(result.token_ids), elapsed, comm.take()


def check_same(method: str, ids: list[int], reference: list[int]) -> None:
    if ids != reference:
        raise SystemExit(f"{method} produced different tokens: the comparison is unfair")


def bench_per_token(
    url: str, cache: Path, rounds: int, tokens: int, repo_id: str = DEMO_TINY_REPO
) -> dict[str, Any]:
    chat, comm = ready(url, cache, repo_id, tokens)
    loaded = loaded_of(chat, repo_id)
    messages = [{"role": "user", "content": PROMPT}]
    enc = encode_chat(loaded, messages, chat.session.settings)
    reference, _ = plain_generate(loaded.model, enc, tokens)  # warm-up
    if len(reference) != tokens:
        raise SystemExit(f"the plain run made {len(reference)} tokens, not {tokens}")

    def widget_turn() -> tuple[list[int], float, int]:
        chat.new_conversation()
        return turn(chat, comm, lambda: chat.send(PROMPT))

    widget_turn()  # warm-up
    rates: dict[str, list[float]] = {"plain": [], "widget": []}
    sent: list[int] = []
    CPU.clear()
    for n in range(rounds):
        for method in rotating(["plain", "widget"], n):
            if method == "plain":
                ids, elapsed = plain_generate(loaded.model, enc, tokens)
            else:
                ids, elapsed, nbytes = widget_turn()
                sent.append(nbytes)
            check_same(method, ids, reference)
            rates[method].append(tokens / elapsed)
    chat.close()
    return {
        "tokens_per_s": rates,
        "ratio": paired(rates["widget"], rates["plain"]),
        "best": max(rates["widget"]) / max(rates["plain"]),
        "cpu": paired(CPU["widget"], CPU["plain"]),
        "bytes_per_token": statistics.median(sent) / tokens,
    }


def bench_long(url: str, cache: Path, repo_id: str, rounds: int, tokens: int) -> dict[str, Any]:
    chat, comm = ready(url, cache, repo_id, tokens)
    seed_conversation(chat, HISTORY, words=3)
    chat.send(PROMPT).wait(600)  # the conversation now ends with our question and a reply
    history = chat.export_messages()[:-1]
    loaded = loaded_of(chat, repo_id)
    settings = chat.session.settings
    enc = encode_chat(loaded, history, settings)
    prompt_tokens = int(enc["input_ids"].shape[-1])
    limit = context_length(loaded)

    def apply(kept: list[dict[str, str]]) -> Any:
        return _apply_template(loaded, kept)

    fitted = fit_chat(
        build_chat(history, settings.system_prompt),
        limit=limit,
        reserve=min(settings.max_new_tokens, limit // 4),
        apply=apply,
        counts=token_counts(loaded.tokenizer, apply),
    )
    reference, _ = plain_generate(loaded.model, enc, tokens)
    times: dict[str, list[float]] = {"plain": [], "widget": []}
    sent: list[int] = []
    CPU.clear()
    for n in range(rounds):
        for method in rotating(["plain", "widget"], n):
            if method == "plain":
                ids, elapsed = plain_generate(loaded.model, enc, tokens)
            else:
                ids, elapsed, nbytes = turn(chat, comm, chat.regenerate)
                sent.append(nbytes)
            check_same(method, ids, reference)
            times[method].append(elapsed)
    messages = len(chat.messages)
    chat.close()
    return {
        "messages": messages,
        "prompt_tokens": prompt_tokens,
        "dropped": fitted.dropped,
        "context": CONTEXTS[repo_id],
        "seconds": times,
        "ratio": paired(times["widget"], times["plain"]),
        "best": min(times["widget"]) / min(times["plain"]),
        "cpu": paired(CPU["widget"], CPU["plain"]),
        "bytes_per_token": statistics.median(sent) / tokens,
    }


def paired(mine: list[float], base: list[float]) -> float:
    """Median over rounds of mine / baseline: both ran back to back under the same load."""
    return statistics.median(m / b for m, b in zip(mine, base, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=400, help="new tokens, per-token bench")
    parser.add_argument("--long-tokens", type=int, default=64, help="new tokens per long turn")
    args = parser.parse_args()

    with fresh_dir(prefix="bench-stream-hub-") as root, fresh_dir(prefix="bench-cache-") as cache:
        build_hub(root)
        with run_hub_process(root) as url:
            print("per-token overhead (fresh chat)...", flush=True)
            fresh = bench_per_token(url, cache, args.rounds, args.tokens)
            print("per-token overhead on the small model...", flush=True)
            small = bench_per_token(url, cache, args.rounds, args.tokens, SMALL)
            long_runs = {}
            for repo_id in (SHORT, LONG):
                print(f"a whole turn at {HISTORY} messages on {repo_id}...", flush=True)
                long_runs[repo_id] = bench_long(url, cache, repo_id, args.rounds, args.long_tokens)

    plain_rate = statistics.median(fresh["tokens_per_s"]["plain"])
    widget_rate = statistics.median(fresh["tokens_per_s"]["widget"])
    short, long = long_runs[SHORT], long_runs[LONG]
    rows: list[list[object]] = [
        [
            "widget_tokens_per_s_over_plain_generate",
            fresh["ratio"],
            f"{widget_rate:.0f} vs {plain_rate:.0f} tok/s (medians), {args.tokens} new tokens; "
            f"best rounds: {fresh['best']:.3f}; CPU time widget/plain {fresh['cpu']:.3f}",
        ],
        [
            "widget_tokens_per_s_over_plain_generate (small model)",
            small["ratio"],
            f"{statistics.median(small['tokens_per_s']['widget']):.0f} vs "
            f"{statistics.median(small['tokens_per_s']['plain']):.0f} tok/s (medians); best "
            f"rounds: {small['best']:.3f}; CPU time widget/plain {small['cpu']:.3f}",
        ],
    ]
    for name, run in (("short_context", short), ("long_context", long)):
        plain_s = statistics.median(run["seconds"]["plain"])
        widget_s = statistics.median(run["seconds"]["widget"])
        rows.append(
            [
                f"turn_at_1000_messages_over_plain_generate ({name})",
                run["ratio"],
                f"{widget_s * 1e3:.0f} vs {plain_s * 1e3:.0f} ms (medians), best rounds: "
                f"{run['best']:.3f}, CPU time {run['cpu']:.3f}; {run['messages']} messages, "
                f"{run['dropped']} dropped, "
                f"{run['prompt_tokens']} prompt tokens of {run['context']}, "
                f"{args.long_tokens} new",
            ]
        )
    rows.append(
        [
            "bytes_per_token_over_200 (fresh chat)",
            fresh["bytes_per_token"] / 200,
            f"{fresh['bytes_per_token']:.1f} B/token",
        ]
    )
    for name, run in (("short_context", short), ("long_context", long)):
        rows.append(
            [
                f"bytes_per_token_over_200 (1000 messages, {name})",
                run["bytes_per_token"] / 200,
                f"{run['bytes_per_token']:.1f} B/token",
            ]
        )
    print_table(["ratio", "value", "measured"], rows)
    print(
        "wrote",
        write_results(
            "widget_stream",
            {
                "fresh": fresh,
                "small": small,
                "long": long_runs,
                "ratios": {r[0]: r[1] for r in rows},
            },
        ),
    )


if __name__ == "__main__":
    main()
