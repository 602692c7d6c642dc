"""The remote path against the same request made directly with the ``openai`` client.

One ``transformers serve`` process (offline, CPU) serves one model for the whole run; every
method sends it the same greedy request. Three ratios:

1. tokens/s through chatwidget over direct (goal: >= 0.97), for the remote engine alone and
   through the widget;
2. time to first token through chatwidget over direct (goal: <= 1.05), likewise;
3. stop latency over one chunk interval plus 50 ms (goal: <= 1.0): the time from setting the
   stop event until ``generate`` returns (the kernel stops reading), against the median gap
   between chunks of the same stream.

The direct baseline calls ``client.chat.completions.create``; chatwidget sends the same
request (same JSON body and key) with the client's ``post``, which skips ``create``'s walk of
its parameter types (see ``chatwidget.engine.remote.stream.open_stream``): that is why the
engine alone can be ahead of direct. ``TTFT widget / engine`` (informative) is what the widget
itself adds on top of the engine.

Each method is a function in :data:`METHODS` that makes one reply and returns what it
measured. ``widget`` goes through a whole :class:`ChatWidget` with the server added by
``servers=``: ``regenerate`` (the same one-message history each time), the session's reply
thread, the delta stream and the publisher, with the comm recorded in-process (each message
serialized to JSON, as ipykernel would); its time to first token is when the first streamed
text was *sent on the comm*, and its reply ends when the handle says so. In each
round every method makes ``--replies`` replies, interleaved and taking turns to go first; a
ratio is the median over rounds of the ratio of the round's medians (a shared machine's load
swings between rounds more than within one).

    .venv/bin/python bench/bench_remote.py [--rounds 15] [--replies 5] [--tokens 128]
                                           [--stops 7] [--size tiny|small]

The tiny model is the harsh case for overhead (the server makes chunks fast); ``--size
small`` gives slower chunks. Results go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import openai
from _common import print_table, rotating, work_dir, write_results

from chatwidget.catalog import ModelSpec, remote_key
from chatwidget.engine.remote import RemoteEngine
from chatwidget.engine.types import GenerationSettings
from chatwidget.testing.models import build_model
from chatwidget.testing.transformers_serve import ServedModel, run_transformers_serve
from chatwidget.widget import ChatWidget

MESSAGES = [{"role": "user", "content": "Please explain how a download manager shows progress."}]
SERVER = "bench"
STOP_SLACK_S = 0.050


@dataclass(frozen=True)
class Reply:
    """What one reply measured, from just before the request. ``kernel_ttft_s``: for the
    widget, when its first text reached the session (before the publisher sends it)."""

    ttft_s: float
    tokens: int
    duration_s: float
    kernel_ttft_s: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s


@dataclass
class Setup:
    """What the methods share: the server, a direct client and a connected engine."""

    served: ServedModel
    client: openai.OpenAI
    engine: RemoteEngine
    key: str
    tokens: int
    chat: ChatWidget
    comm: CommClock


def direct(setup: Setup) -> Reply:
    """The baseline: the openai client's own stream, read to the end."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    stream = setup.client.chat.completions.create(
        model=setup.served.model_id,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=setup.tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and any(c.delta.content for c in chunk.choices):
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return Reply((first or end) - started, tokens, end - started)


def engine(setup: Setup) -> Reply:
    """chatwidget's remote engine, with an ``on_text`` callback as the widget passes one."""
    first: list[float] = []

    def on_text(piece: str) -> None:
        if not first:
            first.append(time.perf_counter())

    started = time.perf_counter()
    result = setup.engine.generate(
        setup.key, MESSAGES, GenerationSettings(max_new_tokens=setup.tokens), on_text=on_text
    )
    end = time.perf_counter()
    return Reply((first[0] if first else end) - started, result.usage.new_tokens, end - started)


class CommClock:
    """Records when the widget first sends streamed text on its comm (JSON-encoded, as
    ipykernel would serialize it)."""

    def __init__(self, chat: ChatWidget) -> None:
        self.first_delta: float | None = None
        chat.comm.publish_msg = self._publish

    def _publish(self, _msg_type: str, data: Any = None, **_: Any) -> None:
        json.dumps(data, separators=(",", ":"))
        content = data.get("content") if isinstance(data, dict) else None
        is_delta = isinstance(content, dict) and content.get("kind") == "delta"
        if self.first_delta is None and is_delta:
            self.first_delta = time.perf_counter()

    def reset(self) -> None:
        self.first_delta = None


def widget(setup: Setup) -> Reply:
    """Through the widget: regenerate the reply to the same message; TTFT at the comm."""
    chat = setup.chat
    if not chat.wait_until_idle(60):
        raise RuntimeError("the widget did not settle between replies")
    setup.comm.reset()
    started = time.perf_counter()
    handle = chat.regenerate()
    handle.wait_for_first_token(120)
    kernel_first = time.perf_counter()
    handle.wait(120)
    end = time.perf_counter()
    result = handle.result
    assert result is not None
    first = setup.comm.first_delta
    ttft = (first if first is not None else end) - started
    return Reply(ttft, result.usage.new_tokens, end - started, kernel_first - started)


def widget_ready(served: ServedModel, key: str, tokens: int, cache: Path) -> ChatWidget:
    """A widget with the server added (``servers=``), its model Ready, one reply made."""
    chat = ChatWidget(models=[], servers={SERVER: served.base_url}, cache_dir=cache)
    if not chat.wait_until_idle(120) or key not in chat.server_models(SERVER):
        raise RuntimeError(f"the widget did not list {key}")
    chat.select_model(key)
    if not chat.wait_until_idle(120) or chat.active_model != key:
        raise RuntimeError(f"{key} did not become Ready in the widget")
    chat.set_settings(max_new_tokens=tokens, do_sample=False)
    chat.send(MESSAGES[0]["content"]).wait(120)
    return chat


#: name -> one reply; "direct" is the baseline every other method is divided by.
METHODS: dict[str, Callable[[Setup], Reply]] = {
    "direct": direct,
    "engine": engine,
    "widget": widget,
}


def _median_tps(replies: list[Reply]) -> float:
    return statistics.median(r.tokens_per_s for r in replies)


def _median_ttft(replies: list[Reply]) -> float:
    return statistics.median(r.ttft_s for r in replies)


def stop_latency(setup: Setup, rng: random.Random) -> dict[str, float]:
    """Stop a long reply at a random moment; time until ``generate`` returns."""
    stop = threading.Event()
    stamps: list[float] = []
    stopped_at: list[float] = []
    after = rng.randint(5, 40)

    def on_text(piece: str) -> None:
        stamps.append(time.perf_counter())

    def stopper() -> None:
        while len(stamps) < after:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.01))  # somewhere between two chunks
        stopped_at.append(time.perf_counter())
        stop.set()

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    result = setup.engine.generate(
        setup.key, MESSAGES, GenerationSettings(max_new_tokens=400), on_text=on_text, stop=stop
    )
    returned = time.perf_counter()
    thread.join()
    if not result.stopped:
        raise RuntimeError("the reply finished before the stop: raise max tokens")
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    interval = statistics.median(gaps)
    latency = returned - stopped_at[0]
    return {"latency_s": latency, "chunk_interval_s": interval, "after_chunks": float(after)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--replies", type=int, default=5, help="per method and round")
    parser.add_argument("--stops", type=int, default=7)
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    root = work_dir() / "bench-remote"
    folder = root / "bench" / f"remote-{args.size}"
    if not (folder / "config.json").is_file():
        build_model(root, f"bench/remote-{args.size}", args.size, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-remote-hf-") as hf_home:
        os.environ["HF_HOME"] = hf_home
        with run_transformers_serve(Path(folder)) as served:
            return run(served, args, rng)


def run(served: ServedModel, args: Any, rng: random.Random) -> int:
    client = openai.OpenAI(base_url=served.base_url, api_key="EMPTY", max_retries=0)
    remote = RemoteEngine()
    remote.add_server(served.base_url, name=SERVER)
    key = remote_key(SERVER, served.model_id)
    remote.load(ModelSpec(key))
    cache = Path(tempfile.mkdtemp(prefix="bench-remote-cache-"))
    chat = widget_ready(served, key, args.tokens, cache)
    setup = Setup(served, client, remote, key, args.tokens, chat, CommClock(chat))
    try:
        for method in METHODS.values():  # warm up every path (connections, server caches)
            method(setup)
            method(setup)
        per_round: list[dict[str, list[Reply]]] = []
        for round_no in range(args.rounds):
            replies: dict[str, list[Reply]] = {name: [] for name in METHODS}
            for i in range(args.replies):
                for name in rotating(list(METHODS), round_no + i):
                    replies[name].append(METHODS[name](setup))
            per_round.append(replies)
            print(
                f"round {round_no + 1}: "
                + ", ".join(
                    f"{n} {_median_tps(r):.1f} tok/s ttft {_median_ttft(r) * 1000:.1f} ms"
                    for n, r in replies.items()
                ),
                flush=True,
            )
        stops = [stop_latency(setup, rng) for _ in range(args.stops)]
    finally:
        chat.close()
        remote.close()
        client.close()

    ratios: dict[str, float] = {}
    rows: list[list[object]] = []
    for name in METHODS:
        if name == "direct":
            continue
        tps = statistics.median(_median_tps(r[name]) / _median_tps(r["direct"]) for r in per_round)
        ttft = statistics.median(
            _median_ttft(r[name]) / _median_ttft(r["direct"]) for r in per_round
        )
        ratios[f"tokens_per_s_{name}_over_direct"] = tps
        ratios[f"ttft_{name}_over_direct"] = ttft
        rows += [[f"tokens/s {name} / direct", tps, ">= 0.97"]]
        rows += [[f"TTFT {name} / direct", ttft, "<= 1.05"]]
        if name == "widget":  # informative: the first text in the kernel, before it is sent
            kernel = statistics.median(
                statistics.median(x.kernel_ttft_s or 0.0 for x in r[name])
                / _median_ttft(r["direct"])
                for r in per_round
            )
            ratios["ttft_widget_in_kernel_over_direct"] = kernel
            rows += [["TTFT widget, in the kernel / direct (info)", kernel, ""]]
            # informative: what the widget adds to the engine alone (the engine posts its
            # request without the client's parameter transform, so it is ahead of direct)
            own = statistics.median(
                _median_ttft(r[name]) / _median_ttft(r["engine"]) for r in per_round
            )
            ratios["ttft_widget_over_engine"] = own
            rows += [["TTFT widget / engine (info: the widget's own cost)", own, ""]]
    stop_ratio = statistics.median(
        s["latency_s"] / (s["chunk_interval_s"] + STOP_SLACK_S) for s in stops
    )
    ratios["stop_latency_over_chunk_interval_plus_50ms"] = stop_ratio
    rows.append(["stop latency / (chunk interval + 50 ms)", stop_ratio, "<= 1.0"])
    print()
    print_table(["ratio", "value", "goal"], rows)
    latencies = [s["latency_s"] * 1000 for s in stops]
    intervals = [s["chunk_interval_s"] * 1000 for s in stops]
    print(
        f"stop latency {statistics.median(latencies):.1f} ms (max {max(latencies):.1f}), "
        f"chunk interval {statistics.median(intervals):.1f} ms"
    )
    out = write_results(
        "bench_remote",
        {
            "ratios": ratios,
            "size": args.size,
            "tokens": args.tokens,
            "rounds": [
                {
                    n: [r.__dict__ | {"tokens_per_s": r.tokens_per_s} for r in rs]
                    for n, rs in rr.items()
                }
                for rr in per_round
            ],
            "stops": stops,
        },
    )
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
