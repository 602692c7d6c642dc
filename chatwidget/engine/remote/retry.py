"""Retry a request the server answered with 429, honouring ``Retry-After``, and say so.

Each wait is announced through a :class:`RemoteNotice` first, so the UI can show it, and can
be cut short (Stop, Cancel, close): ``wait(seconds)`` returns True when it was interrupted.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import openai

from chatwidget.engine.remote.types import Phase, RemoteNotice, RemoteSettings
from chatwidget.errors import RateLimitedError

logger = logging.getLogger("chatwidget.engine.remote")

T = TypeVar("T")


class InterruptedWaitError(Exception):
    """A wait before a retry was cut short (Stop, Cancel or close)."""


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or
    an HTTP date). None when it does not say, or says something unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            if name != "retry-after":
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            seconds = when.timestamp() - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def call_with_retries(
    call: Callable[[], T],
    *,
    settings: RemoteSettings,
    label: str,
    model: str,
    phase: Phase,
    notify: Callable[[RemoteNotice], None],
    wait: Callable[[float], bool],
) -> T:
    """Run ``call``; on 429 wait (Retry-After, else doubling backoff) and run it again.

    Raises RateLimitedError once ``settings.rate_limit_retries`` retries are spent or the
    server asks for a longer wait than ``settings.backoff_max_s``, and
    InterruptedWaitError when ``wait`` is interrupted.
    """
    attempts = settings.rate_limit_retries + 1
    attempt = 1
    while True:
        try:
            return call()
        except openai.RateLimitError as exc:
            asked = retry_after_s(exc.response.headers)
            if attempt >= attempts:
                raise RateLimitedError(
                    f"{label} is still busy (429 Too Many Requests) after {attempts} tries: "
                    "wait a little, then retry."
                ) from None
            if asked is not None and asked > settings.backoff_max_s:
                raise RateLimitedError(
                    f"{label} is busy (429 Too Many Requests) and asks to wait {asked:.0f} s, "
                    f"longer than the {settings.backoff_max_s:g} s allowed: retry later."
                ) from None
            delay = asked
            if delay is None:
                delay = min(settings.backoff_max_s, settings.backoff_initial_s * 2 ** (attempt - 1))
            attempt += 1
            message = (
                f"{label} is busy (429 Too Many Requests): retrying in {delay:.1f} s "
                f"(attempt {attempt} of {attempts})."
            )
            logger.info("%s", message)
            notify(RemoteNotice(model, phase, "rate_limited", message, delay, attempt, attempts))
            if wait(delay):
                raise InterruptedWaitError from None
