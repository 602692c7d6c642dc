"""The widget with remote servers, on the real path: ChatWidget, the shared runtime, the real
orchestrator, a real ``transformers serve`` behind the fault proxy, and the comm boundary as
the browser sees it (tests/widget/frontend.py). No HTTP client is mocked.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatwidget.catalog import remote_key
from chatwidget.errors import InvalidServerError, RemoteError
from chatwidget.orchestrator import StateChanged, Switched
from chatwidget.testing.fault_proxy import FaultProxy
from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_TINY_REPO
from chatwidget.testing.transformers_serve import ServedModel, free_port
from chatwidget.widget import ChatWidget
from tests.remote.helpers import CHAT, QUICK, SERVER, WAIT_S
from tests.widget.frontend import FrontEnd, wait_for


@pytest.fixture
def make_chat(hf_cache: Path, local_hub: LocalHub) -> Iterator[Callable[..., ChatWidget]]:
    """``make_chat(**kwargs)``: a widget on the local hub with the tiny local model, quick
    remote settings and short replies; closed when the test ends."""
    made: list[ChatWidget] = []

    def make(**kwargs: Any) -> ChatWidget:
        kwargs.setdefault("models", [DEMO_TINY_REPO])
        chat = ChatWidget(endpoint=local_hub.url, cache_dir=hf_cache, **kwargs)
        chat._runtime.remote.settings = QUICK  # small timeouts and backoffs
        chat.set_settings(max_new_tokens=12)
        made.append(chat)
        return chat

    yield make
    for chat in made:
        chat.close()


def _states(chat: ChatWidget, key: str) -> list[str]:
    seen: list[str] = []
    chat.subscribe(
        lambda e: (
            seen.append(e.new.value) if isinstance(e, StateChanged) and e.repo_id == key else None
        )
    )
    return seen


def test_a_server_added_at_creation_lists_its_models_in_the_selector_and_chats(
    make_chat: Callable[..., ChatWidget], proxy: FaultProxy, served: ServedModel
) -> None:
    chat = make_chat(servers={SERVER: proxy.url + "/v1"})
    front = FrontEnd(chat)
    key = remote_key(SERVER, served.model_id)
    assert chat.wait_until_idle(WAIT_S)
    assert chat.server_models(SERVER) == [key]
    (server,) = chat.servers
    assert server == {
        "name": SERVER,
        "base_url": proxy.url + "/v1",
        "status": "ready",
        "error": None,
        "action": None,
        "can_retry": False,
        "has_api_key": False,
        "models": [key],
        "notice": None,
    }
    rows = {row["repo_id"]: row for row in chat.models}
    assert rows[key]["server"] == SERVER
    assert rows[key]["state"] == "Downloaded"
    assert rows[DEMO_TINY_REPO]["server"] is None

    # pick it from the selector: Queued -> Connecting -> Ready, no download
    states = _states(chat, key)
    assert front.request("select_model", repo_id=key)["ok"]
    wait_for(chat, lambda: chat.active_model == key, WAIT_S, "the remote model")
    assert states == ["Queued", "Connecting", "Ready"]
    (download,) = [d for d in chat.downloads if d["repo_id"] == key]
    assert download["server"] == SERVER
    assert download["bytes_total"] == 0

    # a reply streams through the widget
    mark = front.mark()
    assert front.request("send", text="hello")["ok"]
    assert chat.wait_until_idle(WAIT_S)
    last = chat.messages[-1]
    assert last["status"] == "done"
    assert last["model"] == key
    assert last["content"]
    assert last["new_tokens"]
    assert last["tokens_per_s"]
    assert "".join(d["text"] for d in front.deltas(mark)) in last["content"]

    # a long one, stopped after its first text: the kernel stops reading, partial kept
    chat.set_settings(max_new_tokens=400)
    reply = chat.send("tell me more")
    assert reply.wait_for_first_token(WAIT_S)
    assert front.request("stop")["ok"]
    reply.wait(WAIT_S)
    assert chat.wait_until_idle(WAIT_S)
    stopped = chat.messages[-1]
    assert stopped["status"] == "stopped"
    assert stopped["model"] == key
    chat.set_settings(max_new_tokens=12)

    # switch to a local model and back: the conversation carries over
    assert front.request("select_model", repo_id=DEMO_TINY_REPO)["ok"]
    wait_for(chat, lambda: chat.active_model == DEMO_TINY_REPO, 120, "the local model")
    assert chat.send("and locally?").wait(120)
    assert chat.wait_until_idle(WAIT_S)
    assert chat.messages[-1]["model"] == DEMO_TINY_REPO
    assert front.request("select_model", repo_id=key)["ok"]
    assert chat.active_model == key  # still Ready: no second Connecting
    assert chat.send("remote again").wait(WAIT_S)
    assert chat.wait_until_idle(WAIT_S)
    assert [m["model"] for m in chat.messages if m["role"] == "assistant"] == [
        key,
        key,
        DEMO_TINY_REPO,
        key,
    ]


def test_a_server_added_from_the_front_end_keeps_its_key_out_of_everything_sent(
    make_chat: Callable[..., ChatWidget],
    served: ServedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    key = f"sk-ui-{secrets.token_hex(12)}"
    wrong = f"sk-wrong-{secrets.token_hex(12)}"
    with FaultProxy(served.url, api_key=key) as guarded:
        chat = make_chat()
        front = FrontEnd(chat)
        events: list[Any] = []
        chat.subscribe(events.append)
        url = guarded.url + "/v1"
        reply = front.request("add_server", name="locked", base_url=url, api_key=key)
        assert reply["ok"], reply
        assert chat.wait_until_idle(WAIT_S)
        (row,) = chat.servers
        assert row["status"] == "ready"
        assert row["has_api_key"] is True
        model = remote_key("locked", served.model_id)
        assert front.request("select_model", repo_id=model)["ok"]
        wait_for(chat, lambda: chat.active_model == model, WAIT_S, "connected")
        assert chat.send("hello").wait(WAIT_S)
        assert chat.wait_until_idle(WAIT_S)
        # a 429 wait, and a server error that echoes the key back
        guarded.inject(CHAT, status=429, retry_after_ms=10)
        assert chat.send("again").wait(WAIT_S)
        guarded.inject(CHAT, status=500, message=f"bad request with key {key}")
        with pytest.raises(RemoteError):
            chat.send("and fail").wait(WAIT_S)
        assert chat.wait_until_idle(WAIT_S)
        assert chat.messages[-1]["status"] == "error"
        # the same server with a wrong key: listing fails with a clear error
        assert front.request("add_server", name="locked", base_url=url, api_key=wrong)["ok"]
        assert chat.wait_until_idle(WAIT_S)
        (row,) = chat.servers
        assert row["status"] == "failed"
        assert row["error"]
        assert "API key" in row["error"]
        sent_with_key = [r for r in guarded.requests if r.key_ok]
        assert len(sent_with_key) >= 4  # the key was really used: the grep is not vacuous
        assert any(r.key_ok is False for r in guarded.requests)

        texts = [json.dumps(data, default=repr) for data in front.messages()]
        texts.append(json.dumps(chat.get_state(), default=repr))  # every trait value
        texts += [repr(chat), str(chat.server_rows), chat.export_markdown()]
        texts.append(json.dumps(chat.export_messages()))
        texts.append(json.dumps(chat._repr_mimebundle_(), default=repr))
        texts += [repr(e) for e in events]
        texts += [record.getMessage() for record in caplog.records] + [caplog.text]
        texts.append(repr(chat._runtime.remote))
        chat.close()
    for secret in (key, wrong):
        leaks = [t for t in texts if secret in t]
        assert leaks == [], f"a key leaked into: {leaks[0][:300]}"
    # and the replies that carried it were answered without repeating it
    assert all("sk-" not in t for t in texts if '"add_server-response"' in t)


def test_malformed_server_and_model_messages_get_a_clear_error_and_change_nothing(
    make_chat: Callable[..., ChatWidget], hf_cache: Path
) -> None:
    chat = make_chat()
    front = FrontEnd(chat)
    secret = "sk-" + secrets.token_hex(8)
    cases = [
        ({"name": "x", "base_url": "ftp://host/v1", "api_key": secret}, "http"),
        ({"name": "x", "base_url": "http://u:p@host/v1", "api_key": ""}, "user name"),
        ({"name": "bad name!", "base_url": "http://host/v1", "api_key": ""}, "server name"),
        ({"name": "x", "base_url": "http://host/v1", "api_key": "two words"}, "spaces"),
    ]
    for fields, words in cases:
        reply = front.request("add_server", **fields)
        assert not reply["ok"], reply
        assert words in reply["error"], reply
        assert secret not in reply["error"]
    reply = front.request("add_server", name="x", base_url="http://host/v1")
    assert not reply["ok"]
    assert "needs a field 'api_key'" in reply["error"]
    reply = front.request("add_server", name="x", base_url=7, api_key="")
    assert not reply["ok"]
    assert "wrong type" in reply["error"]
    for bad in ("gpu:", ":model", "gpu model:x", "not a repo"):
        reply = front.request("select_model", repo_id=bad)
        assert not reply["ok"], bad
        assert reply["error"], bad
    reply = front.request("remove_server", name="nope")
    assert not reply["ok"]
    assert "no server named 'nope'" in reply["error"]
    assert chat.servers == []
    assert chat.server_rows == []
    with pytest.raises(InvalidServerError, match="single string"):
        make_chat(servers="http://host/v1")
    with pytest.raises(InvalidServerError, match="Unknown server option"):
        make_chat(servers=[{"base_url": "http://host/v1", "key": secret}])
    threads = {t.name for t in threading.enumerate()}
    with pytest.raises(InvalidServerError, match="Only http"):
        ChatWidget(models=[], servers={"bad": "ftp://host/v1"}, cache_dir=hf_cache)
    assert {t.name for t in threading.enumerate()} <= threads  # nothing left running


def test_an_unreachable_server_fails_its_listing_with_what_to_do_and_can_be_retried(
    make_chat: Callable[..., ChatWidget], proxy: FaultProxy, served: ServedModel
) -> None:
    chat = make_chat()
    down = f"http://127.0.0.1:{free_port()}/v1"
    assert chat.add_server(down, name="down") == "down"
    assert chat.wait_until_idle(WAIT_S)
    (row,) = chat.servers
    assert row["status"] == "failed"
    assert row["can_retry"]
    assert row["action"]
    assert "reach" in (row["error"] or "").lower()
    # the listing is retried (refresh) once the server answers: here, a 500 first
    chat.add_server(proxy.url + "/v1", name=SERVER)
    proxy.inject("/v1/models", status=500)
    assert chat.wait_until_idle(WAIT_S)
    assert {r["name"]: r["status"] for r in chat.servers} == {"down": "failed", SERVER: "failed"}
    front = FrontEnd(chat)
    assert front.request("refresh_server", name=SERVER)["ok"]
    assert chat.wait_until_idle(WAIT_S)
    assert chat.server_models(SERVER) == [remote_key(SERVER, served.model_id)]
    # removing a server takes its models out of the selector
    chat.remove_server("down")
    assert [r["name"] for r in chat.server_rows] == [SERVER]
    assert chat.wait_until_idle(WAIT_S)
    assert [r["name"] for r in chat.servers] == [SERVER]


def test_removing_a_server_evicts_its_ready_model_and_leaves_the_chat_usable(
    make_chat: Callable[..., ChatWidget], proxy: FaultProxy, served: ServedModel
) -> None:
    chat = make_chat(servers=[{"base_url": proxy.url + "/v1", "name": SERVER}])
    key = remote_key(SERVER, served.model_id)
    assert chat.wait_until_idle(WAIT_S)
    chat.select_model(key)
    wait_for(chat, lambda: chat.active_model == key, WAIT_S, "connected")
    front = FrontEnd(chat)
    assert front.request("remove_server", name=SERVER)["ok"]
    assert chat.wait_until_idle(WAIT_S)
    assert chat.servers == []
    assert key not in [row["repo_id"] for row in chat.models]
    # evicted, as the warm pool evicts a local model: the conversation keeps it asleep
    wait_for(chat, lambda: chat.model_state(key) == "Downloaded", WAIT_S, "the eviction")
    chat.select_model(DEMO_TINY_REPO)
    wait_for(chat, lambda: chat.active_model == DEMO_TINY_REPO, 120, "local")
    assert chat.send("still here?").wait(120)


def test_a_stream_dropped_mid_reply_keeps_the_partial_text_and_retry_answers(
    make_chat: Callable[..., ChatWidget], proxy: FaultProxy, served: ServedModel
) -> None:
    chat = make_chat(servers={SERVER: proxy.url + "/v1"})
    key = remote_key(SERVER, served.model_id)
    assert chat.wait_until_idle(WAIT_S)
    chat.select_model(key)
    wait_for(chat, lambda: chat.active_model == key, WAIT_S, "connected")
    chat.set_settings(max_new_tokens=200)
    proxy.inject(CHAT, drop_after=6)
    with pytest.raises(RemoteError) as caught:
        chat.send("hello").wait(WAIT_S)
    assert caught.value.retryable
    assert chat.wait_until_idle(WAIT_S)
    cut = chat.messages[-1]
    assert cut["status"] == "error", cut
    assert cut["content"], cut  # the partial text is kept
    assert "retry" in (cut["error"] or "").lower() or "again" in (cut["error"] or "").lower()
    front = FrontEnd(chat)
    assert front.request("regenerate")["ok"]  # the UI's Retry on that reply
    assert chat.wait_until_idle(WAIT_S)
    again = chat.messages[-1]
    assert again["status"] == "done"
    assert again["model"] == key
    assert again["content"]


def test_a_429_shows_a_notice_while_the_wait_lasts(
    make_chat: Callable[..., ChatWidget], proxy: FaultProxy, served: ServedModel
) -> None:
    chat = make_chat(servers={SERVER: proxy.url + "/v1"})
    key = remote_key(SERVER, served.model_id)
    assert chat.wait_until_idle(WAIT_S)
    chat.select_model(key)
    wait_for(chat, lambda: chat.active_model == key, WAIT_S, "connected")
    front = FrontEnd(chat)
    mark = front.mark()
    proxy.inject(CHAT, status=429, retry_after="1")
    started = time.monotonic()
    reply = chat.send("hello")
    seen: list[dict[str, Any]] = []

    def notice_shown() -> bool:
        notice = chat.servers[0]["notice"] if chat.servers else None
        if notice:
            seen.append(notice)
        return bool(notice)

    wait_for(chat, notice_shown, 5, "the 429 notice in trait servers")
    notice = seen[0]
    assert notice["phase"] == "reply"
    assert notice["model"] == key
    assert "429" in notice["message"]
    assert 0 < notice["retry_in_s"] <= 1
    assert reply.wait(WAIT_S)
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert chat.wait_until_idle(WAIT_S)
    wait_for(chat, lambda: chat.servers[0]["notice"] is None, 5, "the notice to go")
    # the front end got it through the comm too, and then its end
    updates = [
        d["state"]["servers"]
        for _, d, _ in front.since(mark)
        if d.get("method") == "update" and "servers" in d.get("state", {})
    ]
    assert any(rows and rows[0]["notice"] for rows in updates)
    assert updates[-1][0]["notice"] is None


def test_local_downloading_then_remote_then_local_again_switches_only_to_the_last_wish(
    make_chat: Callable[..., ChatWidget],
    proxy: FaultProxy,
    served: ServedModel,
    local_hub: LocalHub,
    small_repo: str,
) -> None:
    """The guard through the widget: A (local, downloading) -> B (remote) -> A."""
    chat = make_chat(models=[small_repo], servers={SERVER: proxy.url + "/v1"})
    remote = remote_key(SERVER, served.model_id)
    assert chat.wait_until_idle(WAIT_S)
    switches: list[str] = []
    chat.subscribe(lambda e: switches.append(e.repo_id) if isinstance(e, Switched) else None)
    front = FrontEnd(chat)
    local_hub.rate = 4_000_000  # ~28 MB: several seconds, time to change our mind
    try:
        assert front.request("select_model", repo_id=small_repo)["ok"]
        wait_for(chat, lambda: chat.model_state(small_repo) == "Downloading", 60, "A downloads")
        assert front.request("select_model", repo_id=remote)["ok"]
        assert chat.requested_model == remote
        assert front.request("select_model", repo_id=small_repo)["ok"]
    finally:
        local_hub.rate = None
    assert chat.wait_until_idle(180)
    assert chat.active_model == small_repo
    assert chat.model_state(small_repo) == "Ready"
    assert remote not in switches  # B was never switched to
    assert switches == [small_repo]
    assert chat.send("hello").wait(120)
