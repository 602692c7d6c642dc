"""Check a message from the front end against the protocol, before anything acts on it.

Everything the front end sends is untrusted: wrong shapes, unknown kinds, wrong types and
oversized fields (text over 1 MB, ids over 128 characters) raise
:class:`~chatwidget.errors.ProtocolError` with a message that says what to send instead, and
nothing changes. Error texts never echo a large or unknown value back.
"""

from __future__ import annotations

from typing import Any

from chatwidget.errors import ProtocolError
from chatwidget.widget.protocol import INTENT_FIELDS, MAX_ID_CHARS, MAX_TEXT_BYTES


def text_too_large(value: str) -> bool:
    """Whether ``value`` is longer than :data:`MAX_TEXT_BYTES` in UTF-8 (cheap for most)."""
    if len(value) > MAX_TEXT_BYTES:
        return True
    if len(value) * 4 <= MAX_TEXT_BYTES:
        return False
    return len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES


def short_id(value: Any) -> str | None:
    """``value`` if it is a string of at most :data:`MAX_ID_CHARS`, else None."""
    return value if isinstance(value, str) and len(value) <= MAX_ID_CHARS else None


def _check_text(where: str, value: str) -> None:
    if text_too_large(value):
        raise ProtocolError(
            f"{where} is larger than {MAX_TEXT_BYTES // 1_000_000} MB: send a shorter text "
            "(nothing was changed)."
        )


def _check_id(where: str, value: str) -> None:
    if len(value) > MAX_ID_CHARS:
        raise ProtocolError(
            f"{where} is longer than {MAX_ID_CHARS} characters (nothing was changed)."
        )


def validate(content: Any) -> tuple[str, dict[str, Any]]:
    """(kind, fields) of a well-formed intent; raise ProtocolError for anything else."""
    if not isinstance(content, dict):
        raise ProtocolError(f"A message must be an object, not {type(content).__name__}.")
    req_id = content.get("id")
    if not isinstance(req_id, str) or not req_id:
        raise ProtocolError("A message needs a non-empty string 'id'.")
    _check_id("The message id", req_id)
    kind = content.get("kind")
    if short_id(kind) is None or kind not in INTENT_FIELDS:
        shown = repr(kind) if short_id(kind) is not None else "that"
        raise ProtocolError(f"Unknown message kind {shown}; known: {sorted(INTENT_FIELDS)}.")
    args: dict[str, Any] = {}
    for field in INTENT_FIELDS[kind]:
        if field.name not in content:
            raise ProtocolError(f"Message {kind!r} needs a field {field.name!r}.")
        value = content[field.name]
        if not isinstance(value, field.type) or (
            isinstance(value, bool) and field.type is not bool
        ):
            raise ProtocolError(f"Field {field.name!r} of {kind!r} has the wrong type.")
        if field.limit == "text" and isinstance(value, str):
            _check_text(f"Field {field.name!r}", value)
        elif field.limit == "id" and isinstance(value, str):
            _check_id(f"Field {field.name!r}", value)
        elif isinstance(value, dict):
            _check_mapping(f"Field {field.name!r}", value)
        elif isinstance(value, list):
            _check_list(f"Field {field.name!r}", value, field.limit)
        args[field.name] = value
    return kind, args


def _check_mapping(where: str, value: dict[Any, Any]) -> None:
    """Keys are short names; string values are texts."""
    for key, item in value.items():
        if short_id(key) is None:
            raise ProtocolError(f"{where} has a key that is not a short name.")
        if isinstance(item, str):
            _check_text(f"{where}[{key!r}]", item)


def _check_list(where: str, value: list[Any], limit: str | None) -> None:
    """At most 16 strings, each within its field's limit."""
    if len(value) > 16 or not all(isinstance(item, str) for item in value):
        raise ProtocolError(f"{where} must be a short list of strings.")
    for item in value:
        if limit == "id":
            _check_id(where, item)
        else:
            _check_text(where, item)
