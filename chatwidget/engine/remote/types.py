"""Value types of the remote engine: its settings, the models a server lists, and notices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["connecting", "reply", "listing"]


@dataclass(frozen=True)
class RemoteSettings:
    """Timeouts and the 429 retry policy of the remote engine.

    - ``connect_timeout_s``: to open a connection;
    - ``read_timeout_s``: the longest silence while a reply streams (a stall beyond it fails);
    - ``probe_timeout_s``: the whole Connecting check (a cold server may load the model first);
    - ``rate_limit_retries``: how many times a 429 is retried before it fails;
    - ``backoff_initial_s`` / ``backoff_max_s``: the wait when the server gives no Retry-After
      (doubling from the first), and the longest wait accepted; a longer Retry-After fails
      at once with a message that says how long the server asked to wait.
    """

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    probe_timeout_s: float = 120.0
    rate_limit_retries: int = 4
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "probe_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.rate_limit_retries < 0:
            raise ValueError(f"rate_limit_retries must be >= 0, got {self.rate_limit_retries}")
        if not 0 <= self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")


@dataclass(frozen=True)
class RemoteModel:
    """A model a server lists in ``GET /v1/models``; ``key`` is ``"{server}:{model_id}"``."""

    server: str
    model_id: str
    key: str
    owned_by: str | None = None


@dataclass(frozen=True)
class RemoteNotice:
    """Something the user should see while it lasts, e.g. a wait after a 429.

    ``model`` is the model key (or ``"{server}:"`` while listing a server's models);
    ``phase`` says what was waiting: Connecting, a reply, or a model listing. ``message`` is
    ready to show ("gpu is busy (429 Too Many Requests): retrying in 2 s, attempt 2 of 5").
    """

    model: str
    phase: Phase
    kind: str  # "rate_limited"
    message: str
    retry_in_s: float
    attempt: int
    attempts: int
