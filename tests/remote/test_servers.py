"""The server registry and remote model keys: what is accepted, and the errors otherwise."""

from __future__ import annotations

import pytest

from chatwidget.catalog import ModelSpec, remote_key, split_remote_key, validate_model_key
from chatwidget.engine.remote import RemoteEngine, ServerRegistry
from chatwidget.engine.remote.retry import retry_after_s
from chatwidget.engine.remote.servers import normalize_base_url
from chatwidget.errors import (
    InvalidRepoIdError,
    InvalidServerError,
    MissingApiKeyError,
    ServerExistsError,
    UnknownServerError,
)
from chatwidget.failure import failure_of


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("http://host:8000/v1", "http://host:8000/v1"),
        ("http://HOST:8000/v1/", "http://host:8000/v1"),
        ("https://llm.example.org", "https://llm.example.org/v1"),
        ("  http://10.0.0.5:30000  ", "http://10.0.0.5:30000/v1"),
        ("https://gw.example.org/ns/model/v1", "https://gw.example.org/ns/model/v1"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
    ],
)
def test_base_urls_are_normalized(given: str, normalized: str) -> None:
    assert normalize_base_url(given) == normalized


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("ftp://host/v1", "Only http:// and https://"),
        ("file:///etc/passwd", "Only http:// and https://"),
        ("host:8000/v1", "Only http:// and https://"),
        ("javascript:alert(1)", "Only http:// and https://"),
        ("http:///v1", "no host"),
        ("http://host:99999/v1", "port"),
        ("http://host/v1?key=abc", "query"),
        ("http://host/v1#frag", "fragment"),
        ("", "is a string"),
        (None, "is a string"),
    ],
)
def test_bad_urls_are_refused_with_what_to_do(given: object, says: str) -> None:
    with pytest.raises(InvalidServerError, match=says) as caught:
        normalize_base_url(given)
    assert failure_of(caught.value).action == "Check the server settings"


def test_credentials_in_a_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(InvalidServerError, match="api_key=") as caught:
        normalize_base_url("https://me:sk-secret123@host/v1")
    assert "sk-secret123" not in str(caught.value)


def test_add_list_get_remove() -> None:
    servers = ServerRegistry()
    gpu = servers.add("http://gpu-box:8000/v1", name="gpu")
    lab = servers.add("https://lab.example.org/v1")
    assert lab.name == "lab.example.org"
    assert servers.servers() == (gpu, lab)
    assert servers.get("gpu") is gpu
    assert "gpu" in servers
    assert servers.remove("gpu") is gpu
    with pytest.raises(UnknownServerError, match="add_server") as caught:
        servers.get("gpu")
    assert failure_of(caught.value).action == "Add the server"
    with pytest.raises(UnknownServerError):
        servers.remove("gpu")


def test_default_names_do_not_collide() -> None:
    servers = ServerRegistry()
    first = servers.add("http://localhost:8000/v1")
    second = servers.add("http://localhost:8001/v1")
    assert (first.name, second.name) == ("localhost", "localhost-2")
    assert servers.add("http://localhost:8000/v1").name == "localhost"  # same URL, same name


def test_same_name_and_url_replaces_the_key_another_url_is_refused() -> None:
    servers = ServerRegistry()
    before = servers.add("http://gpu:8000/v1", name="gpu")
    after = servers.add("http://gpu:8000/v1", name="gpu", api_key="sk-new")
    assert after is not before
    assert after.has_api_key
    assert not before.has_api_key
    with pytest.raises(ServerExistsError, match="already points at http://gpu:8000/v1"):
        servers.add("http://other:8000/v1", name="gpu")


@pytest.mark.parametrize("name", ["bad name", "gpu:1", "-gpu", "", "a/b", "x" * 65])
def test_bad_server_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidServerError, match="not a valid server name"):
        ServerRegistry().add("http://host/v1", name=name)


def test_the_key_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = ServerRegistry()
    monkeypatch.delenv("CHATWIDGET_TEST_KEY", raising=False)
    with pytest.raises(MissingApiKeyError, match="CHATWIDGET_TEST_KEY, which is not set"):
        servers.add("http://gpu/v1", name="gpu", api_key_env="CHATWIDGET_TEST_KEY")
    monkeypatch.setenv("CHATWIDGET_TEST_KEY", "sk-one")
    server = servers.add("http://gpu/v1", name="gpu", api_key_env="CHATWIDGET_TEST_KEY")
    assert server.api_key() is not None
    assert server.api_key().reveal() == "sk-one"  # type: ignore[union-attr]
    monkeypatch.setenv("CHATWIDGET_TEST_KEY", "sk-two")  # rotated: read at each use
    assert server.api_key().reveal() == "sk-two"  # type: ignore[union-attr]
    monkeypatch.delenv("CHATWIDGET_TEST_KEY")
    with pytest.raises(MissingApiKeyError):
        server.api_key()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"api_key": "sk-a", "api_key_env": "X"}, "not both"),
        ({"api_key_env": "sk-not a variable"}, "name of an environment variable"),
        ({"api_key": ""}, "non-empty"),
        ({"api_key": "sk a"}, "spaces"),
        ({"api_key": 42}, "non-empty string"),
    ],
)
def test_bad_key_arguments(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidServerError, match=says) as caught:
        ServerRegistry().add("http://gpu/v1", name="gpu", **kwargs)  # type: ignore[arg-type]
    assert "sk-a" not in str(caught.value)


def test_reprs_say_whether_a_key_is_set_never_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWIDGET_TEST_KEY", "sk-from-env")
    engine = RemoteEngine()
    direct = engine.add_server("http://gpu:8000/v1", name="gpu", api_key="sk-direct")
    env = engine.add_server("http://lab:8000/v1", name="lab", api_key_env="CHATWIDGET_TEST_KEY")
    assert repr(direct) == "RemoteServer(name='gpu', base_url='http://gpu:8000/v1', api_key=set)"
    assert "api_key_env='CHATWIDGET_TEST_KEY'" in repr(env)
    texts = [repr(engine), repr(engine.servers), repr(direct), repr(env), str(direct)]
    assert not any("sk-" in t for t in texts)


def test_remote_model_keys() -> None:
    assert remote_key("gpu", "Qwen/Qwen2.5-7B-Instruct") == "gpu:Qwen/Qwen2.5-7B-Instruct"
    assert split_remote_key("gpu:Qwen/Qwen2.5-7B-Instruct") == ("gpu", "Qwen/Qwen2.5-7B-Instruct")
    assert split_remote_key("ts:repo:file.gguf") == ("ts", "repo:file.gguf")  # first ':' splits
    assert split_remote_key("Qwen/Qwen2.5-7B-Instruct") is None
    spec = ModelSpec("gpu:/models/llama-70b")
    assert (spec.is_remote, spec.name) == (True, "/models/llama-70b")
    local = ModelSpec("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (local.is_remote, local.name) == (False, "SmolLM2-135M-Instruct")
    assert validate_model_key("demo/tiny-chat") == "demo/tiny-chat"


@pytest.mark.parametrize("key", ["gpu:", "gpu: ", "bad name:x", ":model", "g/pu:x", "gpu:a\nb"])
def test_bad_remote_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRepoIdError, match="remote model key"):
        ModelSpec(key)


def test_hub_ids_are_validated_as_before() -> None:
    with pytest.raises(InvalidRepoIdError, match="org/name"):
        ModelSpec("not-a-repo-id")


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a past date: go now
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(headers) == seconds
