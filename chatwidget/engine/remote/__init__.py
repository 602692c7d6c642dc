"""Remote engines: models on OpenAI-compatible servers (vLLM, SGLang, Ray Serve LLM, llm-d,
``transformers serve``), under the same queue, intent and guard as local models.

- ``servers``: the server registry (names, base URLs, API keys that never leave the kernel);
- ``engine``: :class:`RemoteEngine`, the ``EnginePort`` for ``"server:model id"`` keys;
- ``stream``: one streamed reply through the ``openai`` client, and Stop;
- ``retry``: 429 retries that honour Retry-After and announce each wait;
- ``errors_map``: openai exceptions to chatwidget's remote errors;
- ``routing``: :class:`RoutingEngine` / :class:`RoutingDownloader`, which let one
  orchestrator drive local and remote models through its two ports.
"""

from chatwidget.engine.remote.engine import RemoteEngine
from chatwidget.engine.remote.routing import RoutingDownloader, RoutingEngine, is_remote
from chatwidget.engine.remote.servers import ApiKey, RemoteServer, ServerRegistry
from chatwidget.engine.remote.types import RemoteModel, RemoteNotice, RemoteSettings

__all__ = [
    "ApiKey",
    "RemoteEngine",
    "RemoteModel",
    "RemoteNotice",
    "RemoteServer",
    "RemoteSettings",
    "RoutingDownloader",
    "RoutingEngine",
    "ServerRegistry",
    "is_remote",
]
