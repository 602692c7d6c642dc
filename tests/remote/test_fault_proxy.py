"""The fault proxy itself: it forwards the real server's stream unchanged, and checks keys."""

from __future__ import annotations

import openai
import pytest

from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.transformers_serve import ServedModel
from tests.remote.helpers import CHAT, HELLO, WAIT_S


def stream_text(base_url: str, model: str, api_key: str = "EMPTY") -> tuple[list[str], object]:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        for chunk in stream:
            usage = chunk.usage or usage
            pieces += [c.delta.content or "" for c in chunk.choices]
        return pieces, usage
    finally:
        client.close()


def test_a_stream_through_the_proxy_is_the_servers_stream(
    proxy: FaultProxy, served: ServedModel
) -> None:
    direct = stream_text(served.base_url, served.model_id)
    through = stream_text(proxy.url + "/v1", served.model_id)
    assert through == direct
    (record,) = proxy.wait_done(1, WAIT_S)
    assert (record.path, record.status, record.stream, record.completed) == (CHAT, 200, True, True)
    assert record.events_sent >= 12
    assert not record.client_disconnected
    assert not record.upstream_closed_early


def test_the_proxy_checks_the_key_and_logs_only_whether_it_matched(served: ServedModel) -> None:
    with FaultProxy(served.url, api_key="sk-proxy-key") as guarded:
        with pytest.raises(openai.AuthenticationError):
            stream_text(guarded.url + "/v1", served.model_id, api_key="sk-other")
        assert stream_text(guarded.url + "/v1", served.model_id, api_key="sk-proxy-key")[0]
        refused, accepted = guarded.requests
        assert (refused.status, refused.key_ok, accepted.key_ok) == (401, False, True)
        assert "sk-proxy-key" not in repr(guarded) + repr(guarded.requests)


def test_faults_fire_on_the_nth_request_and_run_out(proxy: FaultProxy, served: ServedModel) -> None:
    fault = proxy.inject(CHAT, status=500, nth=2, times=1)
    assert stream_text(proxy.url + "/v1", served.model_id)[0]
    with pytest.raises(openai.InternalServerError):
        stream_text(proxy.url + "/v1", served.model_id)
    assert stream_text(proxy.url + "/v1", served.model_id)[0]
    assert (fault.matched, fault.fired, fault.exhausted) == (2, 1, True)
