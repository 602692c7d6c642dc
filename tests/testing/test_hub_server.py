"""The local hub's own behaviour over raw HTTP: endpoints, headers, Range, errors, rate, faults."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chatwidget.testing.hub import LocalHub
from chatwidget.testing.models import DEMO_GATED_TOKEN

TINY = "demo/tiny-chat"
WEIGHTS = f"/{TINY}/resolve/main/model.safetensors"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def weights_bytes(hub_root: Path) -> bytes:
    return (hub_root / TINY / "model.safetensors").read_bytes()


# --- endpoints --------------------------------------------------------------------------------


def test_revision_returns_content_hash_commit_and_siblings(local_hub: LocalHub) -> None:
    info = request(local_hub.url, f"/api/models/{TINY}/revision/main").json()
    assert isinstance(info, dict)
    assert info["id"] == TINY
    assert len(info["sha"]) == 40
    assert "model.safetensors" in {s["rfilename"] for s in info["siblings"]}
    # Same content, same commit; asking by the commit gives the same answer.
    again = request(local_hub.url, f"/api/models/{TINY}/revision/{info['sha']}").json()
    assert again == info
    other = request(local_hub.url, "/api/models/demo/tiny-chat-b/revision/main").json()
    assert isinstance(other, dict)
    assert other["sha"] != info["sha"]


def test_model_info_with_blobs_lists_sizes_and_parameter_count(
    local_hub: LocalHub, hub_root: Path
) -> None:
    info = request(local_hub.url, f"/api/models/{TINY}?blobs=true").json()
    assert isinstance(info, dict)
    sizes = {s["rfilename"]: s["size"] for s in info["siblings"]}
    assert sizes["model.safetensors"] == (hub_root / TINY / "model.safetensors").stat().st_size
    assert info["safetensors"]["total"] > 0


def test_tree_lists_files_with_lfs_sha256_for_weights(local_hub: LocalHub, hub_root: Path) -> None:
    tree = request(local_hub.url, f"/api/models/{TINY}/tree/main?recursive=true").json()
    assert isinstance(tree, list)
    by_path = {item["path"]: item for item in tree}
    on_disk = {p.name for p in (hub_root / TINY).iterdir() if not p.name.startswith(".")}
    assert set(by_path) == on_disk
    weights = by_path["model.safetensors"]
    assert weights["lfs"]["oid"] == hashlib.sha256(weights_bytes(hub_root)).hexdigest()
    assert weights["size"] == len(weights_bytes(hub_root))
    config = (hub_root / TINY / "config.json").read_bytes()
    git_oid = hashlib.sha1(b"blob %d\0" % len(config) + config, usedforsecurity=False)
    assert by_path["config.json"]["oid"] == git_oid.hexdigest()
    assert "lfs" not in by_path["config.json"]


def test_tree_of_a_missing_folder_is_entry_not_found(local_hub: LocalHub) -> None:
    reply = request(local_hub.url, f"/api/models/{TINY}/tree/main/additional_chat_templates")
    assert reply.status == 404
    assert reply.headers["x-error-code"] == "EntryNotFound"
    assert len(reply.headers["x-repo-commit"]) == 40


def test_head_resolve_sends_what_the_client_needs(local_hub: LocalHub, hub_root: Path) -> None:
    reply = request(local_hub.url, WEIGHTS, "HEAD", {"Accept-Encoding": "identity"})
    data = weights_bytes(hub_root)
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["content-length"] == str(len(data))
    assert reply.headers["x-linked-size"] == str(len(data))
    assert reply.headers["x-linked-etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert reply.headers["etag"] == reply.headers["x-linked-etag"]
    assert len(reply.headers["x-repo-commit"]) == 40
    assert reply.headers["accept-ranges"] == "bytes"


def test_range_request_gets_206_with_content_range(local_hub: LocalHub, hub_root: Path) -> None:
    data = weights_bytes(hub_root)
    tail = request(local_hub.url, WEIGHTS, headers={"Range": "bytes=1000-"})
    assert tail.status == 206
    assert tail.body == data[1000:]
    assert tail.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    middle = request(local_hub.url, WEIGHTS, headers={"Range": "bytes=10-19"})
    assert (middle.status, middle.body) == (206, data[10:20])
    suffix = request(local_hub.url, WEIGHTS, headers={"Range": "bytes=-5"})
    assert (suffix.status, suffix.body) == (206, data[-5:])
    log = local_hub.requests
    assert [r.range for r in log] == ["bytes=1000-", "bytes=10-19", "bytes=-5"]
    assert log[0].bytes_sent == len(data) - 1000


def test_range_past_the_end_is_416(local_hub: LocalHub, hub_root: Path) -> None:
    size = len(weights_bytes(hub_root))
    reply = request(local_hub.url, WEIGHTS, headers={"Range": f"bytes={size}-"})
    assert reply.status == 416
    assert reply.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/models/nobody/nothing/revision/main", 404, "RepoNotFound"),
        ("/nobody/nothing/resolve/main/config.json", 404, "RepoNotFound"),
        (f"/api/models/{TINY}/revision/v9.9", 404, "RevisionNotFound"),
        (f"/{TINY}/resolve/v9.9/config.json", 404, "RevisionNotFound"),
        (f"/{TINY}/resolve/main/missing.json", 404, "EntryNotFound"),
        ("/api/models/gated/tiny-chat/revision/main", 401, "GatedRepo"),
        ("/gated/tiny-chat/resolve/main/config.json", 401, "GatedRepo"),
    ],
)
def test_errors_carry_x_error_code(local_hub: LocalHub, path: str, status: int, code: str) -> None:
    methods = ("GET", "HEAD") if "/resolve/" in path else ("GET",)
    for method in methods:
        reply = request(local_hub.url, path, method)
        assert (reply.status, reply.headers.get("x-error-code")) == (status, code), method


def test_missing_file_error_names_the_commit(local_hub: LocalHub) -> None:
    commit = request(local_hub.url, f"/api/models/{TINY}/revision/main").json()
    assert isinstance(commit, dict)
    reply = request(local_hub.url, f"/{TINY}/resolve/main/missing.json", "HEAD")
    assert reply.headers["x-repo-commit"] == commit["sha"]


def test_gated_repo_needs_the_right_bearer_token(local_hub: LocalHub) -> None:
    path = "/gated/tiny-chat/resolve/main/config.json"
    wrong = request(local_hub.url, path, headers={"Authorization": "Bearer hf_wrong"})
    right = request(local_hub.url, path, headers={"Authorization": f"Bearer {DEMO_GATED_TOKEN}"})
    assert wrong.status == 401
    assert right.status == 200
    assert json.loads(right.body)["architectures"] == ["LlamaForCausalLM"]
    assert [r.token_present for r in local_hub.requests] == [True, True]


def test_hidden_paths_and_traversal_are_not_served(local_hub: LocalHub, hub_root: Path) -> None:
    (hub_root / TINY / ".secret").write_text("hidden")
    try:
        assert request(local_hub.url, f"/{TINY}/resolve/main/.secret").status == 404
        assert request(local_hub.url, "/demo/../resolve/main/x").status == 404
        escape = f"/{TINY}/resolve/main/../../tiny-chat-b/config.json"
        assert request(local_hub.url, escape).status == 404
    finally:
        (hub_root / TINY / ".secret").unlink()


def test_nested_files_are_listed_by_folder_and_resolved(tmp_path: Path) -> None:
    repo = tmp_path / "org" / "nested"
    (repo / "extra" / "deeper").mkdir(parents=True)
    (repo / "config.json").write_text("{}")
    (repo / "extra" / "notes.txt").write_text("notes")
    (repo / "extra" / "deeper" / "more.txt").write_text("more")
    with LocalHub(tmp_path) as hub:
        top = request(hub.url, "/api/models/org/nested/tree/main").json()
        assert isinstance(top, list)
        assert [(i["type"], i["path"]) for i in top] == [
            ("file", "config.json"),
            ("directory", "extra"),
        ]
        sub = request(hub.url, "/api/models/org/nested/tree/main/extra").json()
        assert isinstance(sub, list)
        assert [i["path"] for i in sub] == ["extra/deeper", "extra/notes.txt"]
        everything = request(hub.url, "/api/models/org/nested/tree/main?recursive=true").json()
        assert isinstance(everything, list)
        assert [i["path"] for i in everything if i["type"] == "file"] == [
            "config.json",
            "extra/deeper/more.txt",
            "extra/notes.txt",
        ]
        assert request(hub.url, "/org/nested/resolve/main/extra/deeper/more.txt").body == b"more"


def test_unicode_in_a_missing_repo_name_still_gets_a_clean_404(local_hub: LocalHub) -> None:
    reply = request(local_hub.url, "/api/models/org/model-%E6%A8%A1/revision/main")
    assert reply.status == 404
    assert reply.headers["x-error-code"] == "RepoNotFound"


def test_agent_harnesses_probe_is_a_plain_404(local_hub: LocalHub) -> None:
    reply = request(local_hub.url, "/api/agent-harnesses")
    assert reply.status == 404
    assert "x-error-code" not in reply.headers


def test_request_log_records_method_path_status_and_bytes(
    local_hub: LocalHub, hub_root: Path
) -> None:
    request(local_hub.url, WEIGHTS, "HEAD")
    request(local_hub.url, WEIGHTS)
    head, get = local_hub.requests
    assert (head.method, head.path, head.status, head.bytes_sent) == ("HEAD", WEIGHTS, 200, 0)
    assert (get.method, get.status, get.bytes_sent) == ("GET", 200, len(weights_bytes(hub_root)))
    assert not get.token_present
    local_hub.clear_requests()
    assert local_hub.requests == []


# --- rate limit -------------------------------------------------------------------------------


def test_rate_limit_slows_a_download_to_about_the_rate(local_hub: LocalHub, hub_root: Path) -> None:
    size = len(weights_bytes(hub_root))
    rate = 200_000
    local_hub.rate = rate
    started = time.monotonic()
    reply = request(local_hub.url, WEIGHTS)
    elapsed = time.monotonic() - started
    assert reply.body == weights_bytes(hub_root)
    # The first 16 KiB chunk goes out at once; the rest is paced. Generous upper bound.
    assert (size - 16_384) / rate * 0.8 <= elapsed < 10 * size / rate


def test_rate_limit_can_be_lifted_while_running(local_hub: LocalHub, hub_root: Path) -> None:
    local_hub.rate = 1_000  # about two minutes for the weights file
    stall = local_hub.inject("*/model.safetensors", stall_after=0)
    result: list[Reply] = []
    client = threading.Thread(target=lambda: result.append(request(local_hub.url, WEIGHTS)))
    client.start()
    assert stall.wait_triggered(10)
    local_hub.rate = None
    stall.release()
    client.join(10)
    assert not client.is_alive()
    assert result[0].body == weights_bytes(hub_root)


def test_a_new_rate_does_not_inherit_the_old_rates_backlog(
    local_hub: LocalHub, hub_root: Path
) -> None:
    local_hub.rate = 100  # the config (~700 bytes) goes out as one burst, owing about 7 s
    assert request(local_hub.url, f"/{TINY}/resolve/main/config.json").status == 200
    local_hub.rate = 100_000_000
    started = time.monotonic()
    assert request(local_hub.url, WEIGHTS).body == weights_bytes(hub_root)
    assert time.monotonic() - started < 3


def test_rate_must_be_positive(local_hub: LocalHub) -> None:
    with pytest.raises(ValueError, match="positive"):
        local_hub.rate = 0


# --- faults -----------------------------------------------------------------------------------


def test_status_fault_hits_only_the_nth_matching_request(local_hub: LocalHub) -> None:
    fault = local_hub.inject("*/config.json", status=503, nth=2)
    path = f"/{TINY}/resolve/main/config.json"
    statuses = [request(local_hub.url, path).status for _ in range(3)]
    assert statuses == [200, 503, 200]
    assert fault.fired == 1
    assert local_hub.requests[1].faults == ("status",)


def test_status_fault_can_carry_an_error_code_and_repeat(local_hub: LocalHub) -> None:
    local_hub.inject("*/revision/*", status=404, error_code="RepoNotFound", times=2)
    path = f"/api/models/{TINY}/revision/main"
    replies = [request(local_hub.url, path) for _ in range(3)]
    assert [r.status for r in replies] == [404, 404, 200]
    assert replies[0].headers["x-error-code"] == "RepoNotFound"


def test_faults_only_match_their_method(local_hub: LocalHub) -> None:
    local_hub.inject("*/config.json", method="HEAD", status=500, times=None)
    path = f"/{TINY}/resolve/main/config.json"
    assert request(local_hub.url, path).status == 200
    assert request(local_hub.url, path, "HEAD").status == 500


def test_delay_fault_holds_the_answer(local_hub: LocalHub) -> None:
    local_hub.inject("*/config.json", delay=0.5)
    started = time.monotonic()
    reply = request(local_hub.url, f"/{TINY}/resolve/main/config.json")
    assert reply.status == 200
    assert time.monotonic() - started >= 0.45


def test_drop_fault_cuts_the_body_after_n_bytes(local_hub: LocalHub, hub_root: Path) -> None:
    local_hub.inject("*/model.safetensors", drop_after=5000)
    parts = urlsplit(local_hub.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    conn.request("GET", WEIGHTS)
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    assert info.value.partial == weights_bytes(hub_root)[:5000]
    assert local_hub.requests[0].bytes_sent == 5000
    # One-shot: the next request is whole.
    assert request(local_hub.url, WEIGHTS).body == weights_bytes(hub_root)


def test_body_faults_ignore_head_requests(local_hub: LocalHub) -> None:
    fault = local_hub.inject("*/model.safetensors", drop_after=10)
    assert request(local_hub.url, WEIGHTS, "HEAD").status == 200
    assert fault.fired == 0


def test_corrupt_fault_flips_the_first_bytes(local_hub: LocalHub, hub_root: Path) -> None:
    local_hub.inject("*/model.safetensors", corrupt=True)
    data = weights_bytes(hub_root)
    body = request(local_hub.url, WEIGHTS).body
    assert len(body) == len(data)
    assert body[:16] == bytes(b ^ 0xFF for b in data[:16])
    assert body[16:] == data[16:]


def _open_raw(url: str, path: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, nbytes: int) -> bytes:
    data = b""
    while len(data) < nbytes:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_stall_fault_stops_sending_until_released(local_hub: LocalHub, hub_root: Path) -> None:
    data = weights_bytes(hub_root)
    fault = local_hub.inject("*/model.safetensors", stall_after=1000)
    sock = _open_raw(local_hub.url, WEIGHTS)
    try:
        assert fault.wait_triggered(10)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200")
        assert _read_until(sock, 1000) == data[:1000]
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # nothing more comes while stalled
        fault.release()
        sock.settimeout(10)
        assert _read_until(sock, len(data) - 1000) == data[1000:]
    finally:
        sock.close()


def test_clear_faults_releases_a_stalled_response(local_hub: LocalHub, hub_root: Path) -> None:
    fault = local_hub.inject("*/model.safetensors", stall_after=0)
    result: list[Reply] = []
    client = threading.Thread(target=lambda: result.append(request(local_hub.url, WEIGHTS)))
    client.start()
    assert fault.wait_triggered(10)
    local_hub.clear_faults()
    client.join(10)
    assert result[0].body == weights_bytes(hub_root)


def test_stop_returns_promptly_with_a_stalled_and_an_idle_connection(hub_root: Path) -> None:
    baseline = set(threading.enumerate())
    hub = LocalHub(hub_root, keep_alive=True).start()
    fault = hub.inject("*/model.safetensors", stall_after=100)
    stalled = _open_raw(hub.url, WEIGHTS)
    parts = urlsplit(hub.url)
    idle = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    idle.request("GET", f"/api/models/{TINY}/revision/main")
    idle.getresponse().read()  # keep-alive: the server thread now waits for a next request
    assert fault.wait_triggered(10)
    started = time.monotonic()
    hub.stop()
    assert time.monotonic() - started < 3
    stalled.settimeout(10)
    received = _read_until(stalled, 10**9)  # ends: the server closed the connection
    assert len(received.split(b"\r\n\r\n", 1)[1]) == 100
    stalled.close()
    idle.close()
    leftover = [t for t in threading.enumerate() if t not in baseline and t.is_alive()]
    assert leftover == [], "the server or a handler thread outlived stop()"


def test_each_response_closes_its_connection_by_default(local_hub: LocalHub) -> None:
    parts = urlsplit(local_hub.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", f"/api/models/{TINY}/revision/main")
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("Connection") == "close"
        assert resp.will_close
    finally:
        conn.close()


def test_inject_rejects_nonsense_counts(local_hub: LocalHub) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        local_hub.inject("*", status=500, nth=0)


def test_url_before_start_says_to_start(hub_root: Path) -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = LocalHub(hub_root).url
