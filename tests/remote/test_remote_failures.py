"""Every remote failure, against the real ``transformers serve`` behind the fault proxy.

Each one must be a clear error (a :class:`Failure` with kind, retryable and action) that says
what to do, and must leave the engine usable: the next request works.
"""

from __future__ import annotations

import threading
import time

import pytest

from chatwidget.catalog import ModelSpec, remote_key
from chatwidget.engine.remote import RemoteEngine, RemoteNotice, RemoteSettings
from chatwidget.errors import (
    BadResponseError,
    RateLimitedError,
    RemoteAuthError,
    RemoteError,
    RemoteModelNotFoundError,
    RemoteServerError,
    ServerTimeoutError,
    ServerUnreachableError,
    StreamDroppedError,
)
from chatwidget.failure import failure_of
from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.transformers_serve import ServedModel, free_port
from tests.remote.helpers import CHAT, HELLO, LONG, QUICK, SHORT


def connected(remote: RemoteEngine, key: str) -> RemoteEngine:
    remote.load(ModelSpec(key))
    return remote


def still_usable(remote: RemoteEngine, key: str) -> None:
    """After a failure the same engine connects and replies."""
    remote.load(ModelSpec(key))
    assert remote.generate(key, HELLO, SHORT).usage.new_tokens == 8


def test_unreachable_server(remote: RemoteEngine, served: ServedModel) -> None:
    remote.add_server(f"http://127.0.0.1:{free_port()}/v1", name="down")
    key = remote_key("down", served.model_id)
    started = time.monotonic()
    with pytest.raises(ServerUnreachableError) as caught:
        remote.load(ModelSpec(key))
    assert time.monotonic() - started < 5.0
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable, failure.action) == ("unreachable", True, "Retry")
    assert "Cannot reach server 'down'" in failure.message
    assert "running" in failure.message
    with pytest.raises(ServerUnreachableError):
        remote.list_models("down")


def test_timeout_while_connecting(remote: RemoteEngine, proxy: FaultProxy, key: str) -> None:
    slow = RemoteEngine(remote.servers, settings=RemoteSettings(probe_timeout_s=0.5))
    held = proxy.inject(CHAT, hold=True)
    try:
        with pytest.raises(ServerTimeoutError) as caught:
            slow.load(ModelSpec(key))
    finally:
        held.release()
        slow.close()
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable) == ("timeout", True)
    assert "did not answer in time" in failure.message
    still_usable(remote, key)


def test_stall_mid_reply_times_out_and_keeps_the_partial_text(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connected(remote, key)
    stall = proxy.inject(CHAT, stall_after=4)
    pieces: list[str] = []
    started = time.monotonic()
    with pytest.raises(ServerTimeoutError) as caught:
        remote.generate(key, HELLO, LONG, on_text=pieces.append)
    stall.release()
    assert QUICK.read_timeout_s <= time.monotonic() - started < QUICK.read_timeout_s + 5
    assert caught.value.partial_text == "".join(pieces) != ""
    assert "stopped" in str(caught.value)
    assert "partial reply is kept" in str(caught.value)
    assert failure_of(caught.value).retryable
    still_usable(remote, key)


def test_wrong_api_key_is_a_401_that_says_check_the_key(served: ServedModel, key: str) -> None:
    with FaultProxy(served.url, api_key="sk-right") as guarded:
        engine = RemoteEngine(settings=QUICK)
        try:
            engine.add_server(guarded.url, name="ts", api_key="sk-wrong")
            with pytest.raises(RemoteAuthError) as caught:
                engine.load(ModelSpec(key))
            failure = failure_of(caught.value)
            assert (failure.kind, failure.retryable) == ("auth", False)
            assert failure.action == "Check the API key"
            assert "refused the API key (401" in failure.message
            engine.add_server(guarded.url, name="ts")  # no key at all
            with pytest.raises(RemoteAuthError, match="wants an API key"):
                engine.load(ModelSpec(key))
            engine.add_server(guarded.url, name="ts", api_key="sk-right")
            still_usable(engine, key)
            assert [r.key_ok for r in guarded.requests][-1] is True
        finally:
            engine.close()


def test_forbidden_is_a_403_that_says_check_the_key(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    proxy.inject(CHAT, status=403)
    with pytest.raises(RemoteAuthError, match="403") as caught:
        remote.load(ModelSpec(key))
    assert failure_of(caught.value).action == "Check the API key"
    still_usable(remote, key)


def test_unknown_model_names_the_models_the_server_has(
    remote: RemoteEngine, proxy: FaultProxy, served: ServedModel
) -> None:
    # transformers serve answers 400 for a model it does not serve; the listing explains it
    with pytest.raises(RemoteModelNotFoundError) as caught:
        remote.load(ModelSpec("ts:nobody/such-model"))
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable, failure.action) == (
        "remote_model_not_found",
        False,
        "Pick another model",
    )
    assert "'nobody/such-model'" in failure.message
    assert served.model_id in failure.message
    # a 404, as vLLM sends
    proxy.inject(CHAT, status=404, message="The model `x` does not exist.")
    with pytest.raises(RemoteModelNotFoundError, match="does not serve 'x/y'"):
        remote.load(ModelSpec("ts:x/y"))


def test_429_is_retried_after_retry_after_and_the_wait_is_announced(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connected(remote, key)
    notices: list[RemoteNotice] = []
    remote.on_notice(notices.append)
    proxy.inject(CHAT, status=429, retry_after="1")
    started = time.monotonic()
    result = remote.generate(key, HELLO, SHORT)
    took = time.monotonic() - started
    assert result.usage.new_tokens == 8
    assert took >= 1.0  # Retry-After: 1 was honoured
    (notice,) = notices
    assert (notice.model, notice.phase, notice.kind) == (key, "reply", "rate_limited")
    assert (notice.retry_in_s, notice.attempt, notice.attempts) == (1.0, 2, 3)
    assert "retrying in 1.0 s" in notice.message
    assert [r.status for r in proxy.requests][-2:] == [429, 200]


def test_429_while_connecting_backs_off_and_connects(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    notices: list[RemoteNotice] = []
    remote.on_notice(notices.append)
    proxy.inject(CHAT, status=429, retry_after_ms=50, times=2)
    remote.load(ModelSpec(key))
    assert [n.phase for n in notices] == ["connecting", "connecting"]
    assert [n.retry_in_s for n in notices] == [0.05, 0.05]


def test_429_that_does_not_end_fails_with_retry_later(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connected(remote, key)
    proxy.inject(CHAT, status=429, times=None)  # no Retry-After: doubling backoff
    with pytest.raises(RateLimitedError) as caught:
        remote.generate(key, HELLO, SHORT)
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable) == ("rate_limited", True)
    assert "after 3 tries" in failure.message
    proxy.clear_faults()
    proxy.inject(CHAT, status=429, retry_after="3600")
    started = time.monotonic()
    with pytest.raises(RateLimitedError, match="asks to wait 3600 s"):
        remote.generate(key, HELLO, SHORT)
    assert time.monotonic() - started < 2.0  # it did not wait an hour
    still_usable(remote, key)


def test_stop_during_a_429_wait_ends_the_reply_at_once(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connected(remote, key)
    stop = threading.Event()
    remote.on_notice(lambda notice: stop.set())
    proxy.inject(CHAT, status=429, retry_after="2")
    started = time.monotonic()
    result = remote.generate(key, HELLO, SHORT, stop=stop)
    assert result.stopped
    assert result.text == ""
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(remote: RemoteEngine, proxy: FaultProxy, key: str, status: int) -> None:
    connected(remote, key)
    proxy.inject(CHAT, status=status, message="engine crashed")
    with pytest.raises(RemoteServerError) as caught:
        remote.generate(key, HELLO, SHORT)
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable, failure.action) == ("server", True, "Retry")
    assert f"HTTP {status}" in failure.message
    assert "engine crashed" in failure.message  # the server's own words
    still_usable(remote, key)


def test_a_stream_that_drops_mid_reply_keeps_the_partial_text(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connected(remote, key)
    proxy.inject(CHAT, drop_after=5)
    pieces: list[str] = []
    with pytest.raises(StreamDroppedError) as caught:
        remote.generate(key, HELLO, LONG, on_text=pieces.append)
    error = caught.value
    assert error.partial_text == "".join(pieces) != ""
    failure = failure_of(error)
    assert (failure.kind, failure.retryable, failure.action) == ("stream_dropped", True, "Retry")
    assert "partial reply is kept" in failure.message
    still_usable(remote, key)


def test_garbage_instead_of_the_api(remote: RemoteEngine, proxy: FaultProxy, key: str) -> None:
    proxy.inject(CHAT, garbage="html")
    with pytest.raises(BadResponseError) as caught:
        remote.load(ModelSpec(key))
    failure = failure_of(caught.value)
    assert (failure.kind, failure.retryable, failure.action) == (
        "bad_response",
        False,
        "Check the URL",
    )
    remote.load(ModelSpec(key))
    proxy.inject(CHAT, garbage="html")
    with pytest.raises(BadResponseError, match="instead of an event stream"):
        remote.generate(key, HELLO, SHORT)
    proxy.inject(CHAT, garbage="json")
    with pytest.raises(BadResponseError, match="not valid JSON"):
        remote.generate(key, HELLO, SHORT)
    proxy.inject("/v1/models", garbage="html")
    with pytest.raises(BadResponseError):
        remote.list_models("ts")
    still_usable(remote, key)


def test_bad_json_mid_stream_keeps_the_partial_text(
    remote: RemoteEngine, proxy: FaultProxy, key: str
) -> None:
    connected(remote, key)
    proxy.inject(CHAT, garbage="json", garbage_after=4)
    with pytest.raises(BadResponseError) as caught:
        remote.generate(key, HELLO, LONG)
    assert caught.value.partial_text != ""
    still_usable(remote, key)


def test_every_remote_error_class_says_what_it_is() -> None:
    from chatwidget import errors

    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, RemoteError) and c is not RemoteError
    ]
    assert len(classes) >= 13
    for cls in classes:
        assert cls.__doc__, cls
        assert cls.kind != RemoteError.kind, cls
        assert isinstance(cls.retryable, bool)
        assert cls.retryable or cls.action, f"{cls.__name__} offers no way out"
