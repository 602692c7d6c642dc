"""Hugging Face tokens per consumer (a widget's group): each is used only for that group's
downloads, and never appears in state, events, logs or reprs."""

from __future__ import annotations

import threading


class TokenBook:
    """group -> token. ``None`` (no entry) means huggingface_hub's usual sources.

    The tokens are private: ``repr`` shows only which groups have one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.__tokens: dict[str, str | bool] = {}

    def set(self, group: str, token: str | bool | None) -> None:
        """Use ``token`` for ``group``'s downloads (None: the usual sources; False: none)."""
        if token is not None and not isinstance(token, str | bool):
            raise TypeError(
                f"A token must be text (e.g. 'hf_...'), False or None, not {type(token).__name__}."
            )
        if isinstance(token, str) and not token.strip():
            raise ValueError("The token is empty: pass your Hugging Face token, e.g. 'hf_...'.")
        with self._lock:
            if token is None:
                self.__tokens.pop(group, None)
            else:
                self.__tokens[group] = token.strip() if isinstance(token, str) else token

    def get(self, group: str | None) -> str | bool | None:
        """The token of ``group``, or None when it has none."""
        if group is None:
            return None
        with self._lock:
            return self.__tokens.get(group)

    def has(self, group: str) -> bool:
        with self._lock:
            return group in self.__tokens

    def drop(self, group: str) -> None:
        with self._lock:
            self.__tokens.pop(group, None)

    def __repr__(self) -> str:
        with self._lock:
            return f"TokenBook(groups_with_a_token={sorted(self.__tokens)})"
