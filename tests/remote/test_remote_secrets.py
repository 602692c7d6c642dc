"""API keys never leave the kernel's clients: not in events, logs, reprs or error texts.

Everything the remote layer produces while it connects, replies and fails (with a key given
directly and one taken from an environment variable) is gathered and grepped for the keys.
The widget state and exports join this grep in the widget phase.
"""

from __future__ import annotations

import logging
import secrets
import threading
import traceback
from pathlib import Path

import pytest

from chatwidget.catalog import ModelSpec, remote_key
from chatwidget.engine.remote import RemoteEngine, RemoteNotice, RoutingDownloader, RoutingEngine
from chatwidget.engine.remote.servers import ApiKey
from chatwidget.errors import ChatWidgetError
from chatwidget.failure import failure_of
from chatwidget.orchestrator import ModelState, Orchestrator, StateChanged, Switched
from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.transformers_serve import ServedModel, free_port
from tests.orchestrator.orch_fakes import Recorder
from tests.remote.helpers import CHAT, HELLO, LONG, QUICK, SHORT, WAIT_S


def everything_about(value: object) -> str:
    """repr, str and, for exceptions, the whole formatted chain."""
    parts = [repr(value), str(value)]
    if isinstance(value, BaseException):
        parts.append("".join(traceback.format_exception(value)))
    return "\n".join(parts)


def test_api_keys_never_appear_in_events_logs_reprs_or_errors(
    served: ServedModel,
    hf_cache: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, env_key, wrong = (f"sk-{name}-{secrets.token_hex(12)}" for name in ("a", "b", "c"))
    monkeypatch.setenv("CHATWIDGET_TEST_KEY", env_key)
    caplog.set_level(logging.DEBUG)  # every logger: chatwidget, openai, httpx2, httpcore2
    produced: list[object] = []
    with (
        FaultProxy(served.url, api_key=key) as direct,
        FaultProxy(served.url, api_key=env_key) as via_env,
    ):
        remote = RemoteEngine(settings=QUICK)
        remote.on_notice(produced.append)
        produced.append(remote.add_server(direct.url, name="direct", api_key=key))
        produced.append(
            remote.add_server(via_env.url, name="env", api_key_env="CHATWIDGET_TEST_KEY")
        )
        produced.append(remote.add_server(direct.url + "/v1", name="wrong", api_key=wrong))
        produced.append(
            remote.add_server(f"http://127.0.0.1:{free_port()}", name="down", api_key=key)
        )
        from chatwidget.downloads import Downloader
        from chatwidget.engine import Engine

        downloader = Downloader(cache_dir=hf_cache)
        engine = Engine(cache_dir=hf_cache, memory_budget_bytes=2 * 1024**3)
        routing = RoutingEngine(engine, remote)
        orch = Orchestrator(RoutingDownloader(downloader), routing)
        recorder = Recorder()
        orch.subscribe(recorder)
        keys = {name: remote_key(name, served.model_id) for name in ("direct", "env", "wrong")}
        try:
            produced += list(remote.list_models("direct")) + list(remote.model_specs("env"))
            # connect through the orchestrator: one fine, one refused, one unreachable
            orch.open_conversation("c1", model=keys["direct"])
            orch.open_conversation("c2", group="g2", model=keys["env"])
            orch.open_conversation("c3", group="g3", model=keys["wrong"])
            orch.open_conversation("c4", group="g4", model=remote_key("down", "m/x"))
            assert orch.wait_until_idle(WAIT_S)
            snapshot = orch.snapshot()
            assert snapshot.models[keys["direct"]].state is ModelState.READY
            assert snapshot.models[keys["env"]].state is ModelState.READY
            assert snapshot.models[keys["wrong"]].state is ModelState.FAILED
            assert snapshot.models[remote_key("down", "m/x")].state is ModelState.FAILED
            produced += [snapshot, *snapshot.models.values()]
            # replies: a fine one, a 429 that waits, a 500, a dropped stream, a stop
            produced.append(orch.generate("c1", HELLO, SHORT))
            for proxy in (direct, via_env):
                proxy.inject(CHAT, status=429, retry_after_ms=10)
            produced.append(orch.generate("c2", HELLO, SHORT))
            produced.append(orch.generate("c1", HELLO, SHORT))
            faults = [
                {"status": 500, "message": f"echo {key}"},  # a server that echoes the key
                {"drop_after": 3},
                {"garbage": "json", "garbage_after": 2},
                {"stall_after": 2},
            ]
            for fault in faults:
                direct.inject(CHAT, **fault)  # type: ignore[arg-type]
                with pytest.raises(ChatWidgetError) as caught:
                    orch.generate("c1", HELLO, LONG)
                direct.clear_faults()
                produced += [caught.value, failure_of(caught.value)]
            stop = threading.Event()
            result = orch.generate("c1", HELLO, LONG, on_text=lambda _: stop.set(), stop=stop)
            produced.append(result)
            monkeypatch.delenv("CHATWIDGET_TEST_KEY")
            with pytest.raises(ChatWidgetError) as caught:
                remote.list_models("env")
            produced.append(caught.value)
            produced += [remote, routing, orch, remote.servers, *remote.servers.servers()]
            produced += [direct, via_env, ApiKey(key), ModelSpec(keys["direct"])]
        finally:
            orch.close()
            downloader.close()
            engine.close()
            remote.close()
        sent = [r for r in direct.requests + via_env.requests if r.key_ok]
        assert len(sent) >= 8  # the keys were really used: the grep below is not vacuous
        assert any(r.key_ok is False for r in direct.requests)  # the wrong key was refused
    produced += recorder.events
    produced += [e.failure for e in recorder.of(StateChanged) if e.failure is not None]
    assert any(isinstance(p, RemoteNotice) for p in produced)
    assert any(isinstance(e, Switched) for e in recorder.events)
    texts = [everything_about(p) for p in produced]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    for secret in (key, env_key, wrong):
        leaks = [t for t in texts if secret in t]
        assert leaks == [], f"a key leaked into: {leaks[0][:500]}"
    assert len(caplog.records) > 20  # the logs were captured at DEBUG


def test_an_api_key_cannot_be_pickled_or_printed() -> None:
    import pickle

    secret = ApiKey("sk-" + secrets.token_hex(8))
    assert secret.reveal() not in repr(secret) + str(secret) + f"{secret}"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
