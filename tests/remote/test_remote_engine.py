"""The remote engine against a real ``transformers serve``, through the fault proxy.

Connecting, listing, streaming with usage, settings on the wire, Stop (between chunks and
while the server is stalled), and the same messages and results as the local engine.
"""

from __future__ import annotations

import threading
import time

import pytest

from chatwidget.catalog import ModelSpec, remote_key
from chatwidget.engine import Engine
from chatwidget.engine.remote import RemoteEngine, RemoteModel
from chatwidget.engine.remote.stream import request_args
from chatwidget.engine.types import GenerationResult, GenerationSettings
from chatwidget.errors import LoadCanceledError, ModelNotLoadedError
from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.transformers_serve import ServedModel
from tests.remote.helpers import CHAT, HELLO, LONG, QUICK, WAIT_S
from tests.remote.helpers import SHORT as GREEDY


def connect(remote: RemoteEngine, key: str) -> None:
    remote.load(ModelSpec(key))
    assert remote.is_loaded(key)


def test_connecting_proves_the_model_with_one_cheap_request(
    remote: RemoteEngine, proxy: FaultProxy, key: str, served: ServedModel
) -> None:
    report = remote.load(ModelSpec(key))
    assert report.repo_id == key
    assert (report.memory_bytes, report.cold_swap, report.evicted) == (0, False, ())
    (probe,) = proxy.requests
    assert (probe.method, probe.path, probe.status) == ("POST", "/v1/chat/completions", 200)
    assert probe.body["model"] == served.model_id
    assert probe.body["max_tokens"] == 1
    assert probe.body.get("stream") is not True
    assert remote.check_fit(ModelSpec(key)).fits


def test_list_models_gives_keys_of_the_servers_models(
    remote: RemoteEngine, key: str, served: ServedModel
) -> None:
    models = remote.list_models("ts")
    assert models == (RemoteModel("ts", served.model_id, key, "local"),)
    (spec,) = remote.model_specs("ts")
    assert (spec.repo_id, spec.name, spec.is_remote) == (key, served.model_id, True)


def test_a_reply_streams_with_usage_like_a_local_one(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connect(remote, key)
    proxy.clear_requests()
    pieces: list[str] = []
    result = remote.generate(key, HELLO, GREEDY, on_text=pieces.append)
    assert isinstance(result, GenerationResult)
    assert not result.stopped
    assert result.text == "".join(pieces) != ""
    usage = result.usage
    assert usage.model == key
    assert usage.new_tokens == 8  # the tiny model never stops early
    assert usage.prompt_tokens > 0
    assert usage.time_to_first_token_s is not None
    assert 0 < usage.time_to_first_token_s <= usage.duration_s
    assert usage.tokens_per_s == pytest.approx(8 / usage.duration_s)
    (request,) = proxy.requests
    assert request.stream
    assert request.completed
    assert not request.client_disconnected


def test_a_reply_is_the_request_the_openai_clients_create_sends(
    served: ServedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine posts its request without ``create`` (see ``open_stream``): the server
    gets the same body and the same bearer key, and an admin key in the environment is
    never sent in its place."""
    import openai

    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-must-not-be-sent")
    secret = "sk-test-bearer"
    with FaultProxy(served.url, api_key=secret) as guarded:
        remote = RemoteEngine(settings=QUICK)
        client = openai.OpenAI(base_url=guarded.url + "/v1", api_key=secret, max_retries=0)
        try:
            key = remote_key("guarded", served.model_id)
            remote.add_server(guarded.url + "/v1", name="guarded", api_key=secret)
            connect(remote, key)
            guarded.clear_requests()
            ours = remote.generate(key, HELLO, GREEDY)
            args = request_args(served.model_id, HELLO, GREEDY)
            theirs = "".join(
                c.delta.content or ""
                for chunk in client.chat.completions.create(**args)
                for c in chunk.choices
            )
        finally:
            client.close()
            remote.close()
        engine_request, create_request = guarded.wait_done(2, WAIT_S)
    assert engine_request.body == create_request.body
    assert (engine_request.method, engine_request.path) == (create_request.method, CHAT)
    assert engine_request.key_ok
    assert create_request.key_ok
    assert engine_request.status == create_request.status == 200
    assert ours.text == theirs != ""


def test_settings_map_onto_the_request(remote: RemoteEngine, proxy: FaultProxy, key: str) -> None:
    connect(remote, key)
    proxy.clear_requests()
    system = GenerationSettings(system_prompt="Be brief.", max_new_tokens=5)
    remote.generate(key, [{"role": "system", "content": "old"}, *HELLO], system)
    sampled = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=0.5, top_p=0.8)
    remote.generate(key, HELLO, sampled)
    greedy, sampling = (r.body for r in proxy.requests)
    assert greedy["stream"] is True
    assert greedy["stream_options"] == {"include_usage": True}
    assert greedy["max_tokens"] == 5
    assert greedy["temperature"] == 0
    assert "top_p" not in greedy
    assert greedy["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert (sampling["max_tokens"], sampling["temperature"], sampling["top_p"]) == (6, 0.5, 0.8)


def test_greedy_replies_are_repeatable(remote: RemoteEngine, key: str) -> None:
    connect(remote, key)
    first = remote.generate(key, HELLO, GREEDY).text
    assert remote.generate(key, HELLO, GREEDY).text == first


def test_stop_ends_the_reply_within_one_chunk_and_the_server_sees_the_disconnect(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connect(remote, key)
    proxy.clear_requests()
    stop = threading.Event()
    pieces: list[str] = []
    stopped_at: list[float] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            stopped_at.append(time.monotonic())
            stop.set()

    result = remote.generate(key, HELLO, LONG, on_text=on_text, stop=stop)
    assert result.stopped
    assert len(pieces) == 3  # no chunk was read after the one that set the stop
    assert result.text == "".join(pieces)
    (request,) = proxy.wait_done(1, WAIT_S)
    assert request.client_disconnected  # the kernel closed the connection...
    assert request.upstream_closed_early  # ...and the proxy closed the server's stream
    assert request.ended_at is not None
    assert request.ended_at - stopped_at[0] < 2.0
    assert request.events_sent < 200  # of about 400 (a few were in flight when it stopped)
    # the chat goes on
    assert not remote.generate(key, HELLO, GREEDY).stopped


def test_stop_while_the_server_is_stalled_returns_at_once(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connect(remote, key)
    proxy.clear_requests()
    stall = proxy.inject("/v1/chat/completions", stall_after=3)
    stop = threading.Event()
    got_text = threading.Event()
    outcome: list[GenerationResult] = []

    def reply() -> None:
        outcome.append(
            remote.generate(key, HELLO, LONG, on_text=lambda _: got_text.set(), stop=stop)
        )

    thread = threading.Thread(target=reply)
    thread.start()
    assert stall.wait_triggered(WAIT_S)
    assert got_text.wait(WAIT_S)
    started = time.monotonic()
    stop.set()
    thread.join(WAIT_S)
    took = time.monotonic() - started
    assert not thread.is_alive()
    assert took < 1.0  # far below the 3 s read timeout: the stop watcher cut the connection
    (result,) = outcome
    assert result.stopped
    assert result.text
    (request,) = proxy.wait_done(1, WAIT_S)
    assert request.client_disconnected
    assert request.upstream_closed_early


def test_stop_before_the_reply_starts_sends_nothing(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connect(remote, key)
    proxy.clear_requests()
    stop = threading.Event()
    stop.set()
    result = remote.generate(key, HELLO, GREEDY, stop=stop)
    assert (result.stopped, result.text) == (True, "")
    assert proxy.requests == []


def test_a_model_must_be_connected_before_it_replies(remote: RemoteEngine, key: str) -> None:
    with pytest.raises(ModelNotLoadedError, match="not connected"):
        remote.generate(key, HELLO, GREEDY)
    connect(remote, key)
    remote.unload(key)
    assert not remote.is_loaded(key)


def test_removing_a_server_drops_its_models_as_evictions(remote: RemoteEngine, key: str) -> None:
    evicted: list[str] = []
    remote.on_evict(evicted.append)
    connect(remote, key)
    assert remote.remove_server("ts") == (key,)
    assert evicted == [key]
    assert not remote.is_loaded(key)


def test_a_conversation_carries_over_between_local_and_remote_models(
    remote: RemoteEngine, key: str, local_engine_with_tiny: tuple[Engine, str]
) -> None:
    engine, local = local_engine_with_tiny
    connect(remote, key)
    history = [{"role": "user", "content": "hello"}]
    first = engine.generate(local, history, GREEDY)
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "and?"}]
    second = remote.generate(key, history, GREEDY)
    history += [{"role": "assistant", "content": second.text}, {"role": "user", "content": "ok"}]
    third = engine.generate(local, history, GREEDY)
    for result in (first, second, third):
        assert isinstance(result, GenerationResult)
        assert result.text
        assert not result.stopped
        assert result.usage.new_tokens == 8
    assert (first.usage.model, second.usage.model, third.usage.model) == (local, key, local)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_cancel_ends_connecting_at_once_even_while_the_server_holds_the_request(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    held = proxy.inject("/v1/chat/completions", hold=True)
    cancel = threading.Event()
    failed: list[BaseException] = []

    def connect_in_background() -> None:
        try:
            remote.load(ModelSpec(key), cancel=cancel)
        except LoadCanceledError as exc:
            failed.append(exc)

    thread = threading.Thread(target=connect_in_background)
    thread.start()
    assert held.wait_triggered(WAIT_S)
    started = time.monotonic()
    cancel.set()
    thread.join(WAIT_S)
    assert time.monotonic() - started < 1.0
    assert len(failed) == 1
    assert not remote.is_loaded(key)
    held.release()
    remote.load(ModelSpec(key), cancel=threading.Event())  # and it connects afterwards
    assert remote.is_loaded(key)
