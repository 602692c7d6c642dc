"""Shared constants of the remote-engine tests (import these, not from conftest)."""

from __future__ import annotations

from chatwidget.engine.remote import RemoteSettings
from chatwidget.engine.types import GenerationSettings

#: The name of the server the ``remote`` fixture adds (the proxy before transformers serve).
SERVER = "ts"
#: Small timeouts and backoffs, so failure tests stay quick.
QUICK = RemoteSettings(
    connect_timeout_s=2.0,
    read_timeout_s=3.0,
    probe_timeout_s=20.0,
    rate_limit_retries=2,
    backoff_initial_s=0.01,
    backoff_max_s=2.0,
)
HELLO = [{"role": "user", "content": "hello"}]
SHORT = GenerationSettings(max_new_tokens=8)
LONG = GenerationSettings(max_new_tokens=400)
CHAT = "/v1/chat/completions"
WAIT_S = 30.0
