"""Export and import of one conversation: JSON (lossless) and Markdown (for people).

JSON (:func:`to_json`) is an object with

- ``"messages"``: the active branch as OpenAI chat messages (``{"role", "content"}``), the
  same list a chat template gets (no failed or empty replies), so any OpenAI-compatible
  tool can read the file;
- ``"chatwidget"``: the whole tree, versioned::

      {"format": "chatwidget.conversation", "version": 1,
       "title": str, "model": str | None, "created_at": float, "root_choice": id | None,
       "messages": [{"id", "parent_id", "role", "content", "status", "created_at",
                     "model"?, "usage"?: {"prompt_tokens", "new_tokens",
                     "time_to_first_token_s", "tokens_per_s", "duration_s"},
                     "error"?, "active_child"?}, ...]}   # creation order, parents first

Markdown (:func:`to_markdown`) shows the active branch: a ``# title``, then per message a
``**You:**`` / ``**Assistant:**`` / ``**System:**`` line, the text, and for replies a
``<sub>model · N tokens · X tok/s</sub>`` line. Text lines that would read as one of these
markers are written with a leading backslash, so :func:`parse` reads the text back exactly
(up to blank lines around it). Branches and usage beyond the ``<sub>`` line are JSON only.

:func:`read` / :func:`parse` accept either format, or a plain OpenAI messages list, and
return an :class:`ImportedConversation` with fresh ids. A malformed input raises
:class:`~chatwidget.history.errors.ImportFormatError`, naming the field
(``chatwidget.messages[3].parent_id``) and what was expected.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatwidget.history.errors import ImportFormatError
from chatwidget.history.tree import ConversationTree
from chatwidget.history.types import ROLES, STATUSES, Message, Role, Status, Usage, new_id

FORMAT = "chatwidget.conversation"
FORMAT_VERSION = 1
#: The largest file :func:`read` accepts.
MAX_IMPORT_BYTES = 64 * 1024 * 1024

_USAGE_FIELDS = Usage._fields
_WHO: dict[str, str] = {"user": "You", "assistant": "Assistant", "system": "System"}
_ROLE_OF: dict[str, Role] = {"You": "user", "Assistant": "assistant", "System": "system"}
_ROLE_LINE = re.compile(r"^\*\*(You|Assistant|System):\*\*[ \t]*$")
_SUB_LINE = re.compile(r"^<sub>(.*)</sub>[ \t]*$")
_ERROR_LINE = re.compile(r"^> Error: (.*)$")
_EMPTY = "_(empty)_"
# Lines of text that the parser would take for markers, with any backslashes before them.
_ESCAPE = re.compile(
    r"^\\*(\*\*(You|Assistant|System):\*\*[ \t]*$|<sub>.*</sub>[ \t]*$|> Error: |_\(empty\)_$)"
)


@dataclass(frozen=True)
class ImportedConversation:
    """What a new conversation needs: a title, a requested model and the message tree.

    ``messages`` are in creation order with fresh ids; ``choices`` and ``root_choice`` say
    which branch is shown (see :meth:`ConversationTree.from_messages`).
    """

    title: str
    model: str | None
    messages: tuple[Message, ...]
    choices: Mapping[str, str] = field(default_factory=dict)
    root_choice: str | None = None

    def tree(self) -> ConversationTree:
        return ConversationTree.from_messages(self.messages, self.choices, self.root_choice)


# ---------------------------------------------------------------------- export


def to_openai(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Messages as OpenAI chat messages, leaving out streaming, failed and empty ones."""
    return [m.as_chat() for m in messages if m.content and m.status not in ("error", "streaming")]


def to_json(
    tree: ConversationTree, *, title: str, model: str | None, created_at: float
) -> dict[str, Any]:
    """The JSON export of a conversation (see the module docstring)."""
    choices = tree.choices()
    nodes = []
    for m in tree.messages():
        node: dict[str, Any] = {
            "id": m.id,
            "parent_id": m.parent_id,
            "role": m.role,
            "content": m.content,
            "status": m.status,
            "created_at": m.created_at,
        }
        if m.model is not None:
            node["model"] = m.model
        usage = m.usage
        if usage is not None:
            node["usage"] = usage._asdict()
        if m.error is not None:
            node["error"] = m.error
        if m.id in choices:
            node["active_child"] = choices[m.id]
        nodes.append(node)
    return {
        "messages": to_openai(tree.path()),
        "chatwidget": {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "title": title,
            "model": model,
            "created_at": created_at,
            "root_choice": tree.root_choice,
            "messages": nodes,
        },
    }


def to_markdown(tree: ConversationTree, *, title: str) -> str:
    """The Markdown export of the active branch (see the module docstring)."""
    lines = [f"# {title}", ""]
    for m in tree.path():
        lines.append(f"**{_WHO[m.role]}:**")
        lines.append("")
        if m.content:
            lines.extend("\\" + ln if _ESCAPE.match(ln) else ln for ln in m.content.split("\n"))
        else:
            lines.append(_EMPTY)
        meta = _meta(m)
        versions = tree.versions(m.id)
        if versions.count > 1:
            meta.append(f"version {versions.label}")
        if meta:
            lines.extend(["", f"<sub>{' · '.join(meta)}</sub>"])
        if m.error:
            lines.extend(["", f"> Error: {' '.join(m.error.split())}"])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _meta(m: Message) -> list[str]:
    meta = []
    if m.role == "assistant" and m.model:
        meta.append(m.model)
    if m.new_tokens is not None:
        meta.append(f"{m.new_tokens} tokens")
    if m.tokens_per_s:
        meta.append(f"{m.tokens_per_s:.1f} tok/s")
    if m.status in ("stopped", "interrupted", "error"):
        meta.append(m.status)
    return meta


# ---------------------------------------------------------------------- import


def read(
    source: str | os.PathLike[str] | bytes | Sequence[Any] | Mapping[str, Any],
) -> ImportedConversation:
    """Import from a file path, file contents (bytes, or JSON/Markdown text), or parsed JSON.

    A ``str`` that starts with ``{``, ``[``, ``#`` or ``**``, or spans lines, is taken as
    contents; any other ``str`` is a path.
    """
    title_hint = None
    if isinstance(source, (str, os.PathLike)) and not (
        isinstance(source, str) and _looks_like_content(source)
    ):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No file {path} to import: check the path.")
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise ImportFormatError(
                "",
                f"the file is {size / 1e6:.0f} MB; at most "
                f"{MAX_IMPORT_BYTES // 10**6} MB can be imported.",
            )
        source = path.read_bytes()
        title_hint = path.stem
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ImportFormatError("", f"the file is not UTF-8 text ({exc}).") from None
    return parse(source, title_hint=title_hint)


def parse(
    data: str | Sequence[Any] | Mapping[str, Any], *, title_hint: str | None = None
) -> ImportedConversation:
    """Import from JSON or Markdown text, a parsed JSON export, or an OpenAI messages list."""
    if isinstance(data, str):
        text = data.strip()
        if text.startswith(("{", "[")):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ImportFormatError(
                    "",
                    f"this is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
                ) from None
        else:
            return _parse_markdown(data, title_hint)
    if isinstance(data, Mapping):
        if "chatwidget" in data:
            return _parse_tree(data["chatwidget"], title_hint)
        if "messages" in data:
            return _parse_openai(data["messages"], "messages", title_hint)
        raise ImportFormatError(
            "",
            "expected a chatwidget export (with a 'chatwidget' block) or an object with "
            f"'messages'; found keys {sorted(map(str, data))[:8]}.",
        )
    if isinstance(data, Sequence):
        return _parse_openai(data, "", title_hint)
    raise ImportFormatError(
        "", f"expected JSON, Markdown or a list of messages, not {type(data).__name__}."
    )


def _looks_like_content(text: str) -> bool:
    head = text.lstrip()
    return "\n" in text or head.startswith(("{", "[", "#", "**"))


def _parse_openai(items: Any, where: str, title_hint: str | None) -> ImportedConversation:
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise ImportFormatError(
            where or "messages", f"expected a list of messages, not {_kind(items)}."
        )
    if not items:
        raise ImportFormatError(where or "messages", "the list of messages is empty.")
    messages: list[Message] = []
    parent: str | None = None
    now = time.time()
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if where else f"messages[{i}]"
        if not isinstance(item, Mapping):
            raise ImportFormatError(
                at, f"expected an object with 'role' and 'content', not {_kind(item)}."
            )
        role = item.get("role")
        if role == "developer":
            role = "system"
        if role not in ROLES:
            raise ImportFormatError(
                f"{at}.role",
                f"expected one of 'system', 'user', 'assistant', got {role!r}"
                + (" (tool calls are not imported)" if role in ("tool", "function") else "")
                + ".",
            )
        content = _openai_content(item.get("content"), f"{at}.content")
        mid = new_id("m")
        messages.append(Message(mid, parent, role, content, "done", created_at=now))
        parent = mid
    return ImportedConversation(_title(None, messages, title_hint), None, tuple(messages))


def _openai_content(content: Any, at: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise ImportFormatError(at, "is missing: expected text.")
    if isinstance(content, Sequence):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else _kind(part)
                raise ImportFormatError(
                    f"{at}[{j}]", f"only text parts can be imported, not {kind!r}."
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise ImportFormatError(f"{at}[{j}].text", f"expected text, not {_kind(text)}.")
            parts.append(text)
        return "".join(parts)
    raise ImportFormatError(at, f"expected text or a list of text parts, not {_kind(content)}.")


def _parse_tree(block: Any, title_hint: str | None) -> ImportedConversation:
    w = "chatwidget"
    if not isinstance(block, Mapping):
        raise ImportFormatError(w, f"expected an object, not {_kind(block)}.")
    if block.get("format") != FORMAT:
        raise ImportFormatError(f"{w}.format", f"expected {FORMAT!r}, got {block.get('format')!r}.")
    version = block.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ImportFormatError(f"{w}.version", f"expected a positive integer, got {version!r}.")
    if version > FORMAT_VERSION:
        raise ImportFormatError(
            f"{w}.version",
            f"this file has format version {version}; this chatwidget reads up to "
            f"{FORMAT_VERSION}. Update chatwidget to import it.",
        )
    title = _optional_str(block, "title", w)
    model = _optional_str(block, "model", w)
    items = block.get("messages")
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise ImportFormatError(f"{w}.messages", f"expected a list, not {_kind(items)}.")
    if not items:
        raise ImportFormatError(f"{w}.messages", "the conversation has no messages.")
    fresh: dict[str, str] = {}  # id in the file -> new id
    parent_of: dict[str, str | None] = {}  # id in the file -> parent id in the file
    messages: list[Message] = []
    wanted_choice: dict[str, tuple[str, str]] = {}  # new parent id -> (file child id, where)
    for i, item in enumerate(items):
        at = f"{w}.messages[{i}]"
        old_id, msg = _parse_node(item, at, fresh)
        fresh[old_id] = msg.id
        parent_of[old_id] = item.get("parent_id")
        messages.append(msg)
        child = item.get("active_child")
        if child is not None:
            if not isinstance(child, str):
                raise ImportFormatError(
                    f"{at}.active_child", f"expected a message id, got {child!r}."
                )
            wanted_choice[msg.id] = (child, f"{at}.active_child")
    choices: dict[str, str] = {}
    for new_parent, (child, at) in wanted_choice.items():
        if child not in fresh or fresh.get(parent_of[child] or "") != new_parent:
            raise ImportFormatError(at, f"{child!r} is not a child of this message.")
        choices[new_parent] = fresh[child]
    root_choice = block.get("root_choice")
    if root_choice is not None:
        if (
            not isinstance(root_choice, str)
            or root_choice not in fresh
            or parent_of[root_choice] is not None
        ):
            raise ImportFormatError(
                f"{w}.root_choice", f"{root_choice!r} is not the id of a first message."
            )
        root_choice = fresh[root_choice]
    return ImportedConversation(
        _title(title, messages, title_hint), model, tuple(messages), choices, root_choice
    )


def _parse_node(item: Any, at: str, fresh: Mapping[str, str]) -> tuple[str, Message]:
    """One message of a tree export, with a fresh id; ``fresh`` maps earlier ids."""
    if not isinstance(item, Mapping):
        raise ImportFormatError(at, f"expected an object, not {_kind(item)}.")
    old_id = item.get("id")
    if not isinstance(old_id, str) or not old_id:
        raise ImportFormatError(f"{at}.id", f"expected a non-empty string, got {old_id!r}.")
    if old_id in fresh:
        raise ImportFormatError(f"{at}.id", f"{old_id!r} is used by an earlier message too.")
    pid = item.get("parent_id")
    if pid is not None and (not isinstance(pid, str) or pid not in fresh):
        raise ImportFormatError(
            f"{at}.parent_id", f"{pid!r} is not the id of an earlier message (parents come first)."
        )
    role = item.get("role")
    if role not in ROLES:
        raise ImportFormatError(
            f"{at}.role", f"expected one of {', '.join(map(repr, ROLES))}, got {role!r}."
        )
    content = item.get("content")
    if not isinstance(content, str):
        raise ImportFormatError(f"{at}.content", f"expected text, not {_kind(content)}.")
    status = item.get("status", "done")
    if status not in STATUSES:
        raise ImportFormatError(
            f"{at}.status", f"expected one of {', '.join(map(repr, STATUSES))}, got {status!r}."
        )
    if status == "streaming":
        status = "interrupted"  # nothing is writing it any more
    created = item.get("created_at", 0.0)
    if not _is_number(created):
        raise ImportFormatError(f"{at}.created_at", f"expected a number, got {created!r}.")
    msg = Message(
        new_id("m"),
        None if pid is None else fresh[pid],
        role,
        content,
        status,
        _optional_str(item, "model", at),
        *_usage(item.get("usage"), f"{at}.usage"),
        error=_optional_str(item, "error", at),
        created_at=float(created),
    )
    return old_id, msg


def _usage(value: Any, at: str) -> Usage:
    if value is None:
        return Usage()
    if not isinstance(value, Mapping):
        raise ImportFormatError(at, f"expected an object, not {_kind(value)}.")
    out: list[Any] = []
    for name in _USAGE_FIELDS:
        v = value.get(name)
        if v is not None and not _is_number(v):
            raise ImportFormatError(f"{at}.{name}", f"expected a number or null, got {v!r}.")
        if v is not None and name in ("prompt_tokens", "new_tokens"):
            if float(v) != int(v) or v < 0:
                raise ImportFormatError(f"{at}.{name}", f"expected a count, got {v!r}.")
            v = int(v)
        out.append(v)
    return Usage(*out)


def _parse_markdown(text: str, title_hint: str | None) -> ImportedConversation:
    lines = text.replace("\r\n", "\n").split("\n")
    title = None
    blocks: list[tuple[Role, int, list[str]]] = []  # (role, line number, lines)
    for n, line in enumerate(lines, 1):
        role_match = _ROLE_LINE.match(line)
        if role_match:
            blocks.append((_ROLE_OF[role_match.group(1)], n, []))
        elif blocks:
            blocks[-1][2].append(line)
        elif line.startswith("# ") and title is None:
            title = line[2:].strip() or None
        elif line.strip():
            raise ImportFormatError(
                f"line {n}",
                "expected a '# title' or a '**You:**' / '**Assistant:**' / '**System:**' line "
                f"before any text, got {line[:60]!r}.",
            )
    if not blocks:
        raise ImportFormatError(
            "",
            "no messages found: a Markdown conversation needs lines '**You:**' or "
            "'**Assistant:**' before each message (as chatwidget exports it).",
        )
    messages: list[Message] = []
    parent: str | None = None
    now = time.time()
    for role, _n, body in blocks:
        while body and not body[-1].strip():
            body.pop()
        error = None
        if body and (em := _ERROR_LINE.match(body[-1])):
            error = em.group(1)
            body.pop()
            while body and not body[-1].strip():
                body.pop()
        meta = None
        if body and (sm := _SUB_LINE.match(body[-1])):
            meta = sm.group(1)
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        content = "\n".join(
            ln[1:] if ln.startswith("\\") and _ESCAPE.match(ln[1:]) else ln
            for ln in ([] if body == [_EMPTY] else body)
        )
        model, new_tokens, tps, status = _parse_meta(meta)
        if error is not None and status == "done":
            status = "error"
        mid = new_id("m")
        messages.append(
            Message(
                mid,
                parent,
                role,
                content,
                status,
                model,
                new_tokens=new_tokens,
                tokens_per_s=tps,
                error=error,
                created_at=now,
            )
        )
        parent = mid
    return ImportedConversation(_title(title, messages, title_hint), None, tuple(messages))


def _parse_meta(meta: str | None) -> tuple[str | None, int | None, float | None, Status]:
    model = None
    new_tokens = None
    tps = None
    status: Status = "done"
    if not meta:
        return model, new_tokens, tps, status
    for i, raw in enumerate(meta.split(" · ")):
        item = raw.strip()
        if m := re.fullmatch(r"(\d+) tokens", item):
            new_tokens = int(m.group(1))
        elif m := re.fullmatch(r"([\d.]+) tok/s", item):
            tps = float(m.group(1))
        elif item in ("stopped", "interrupted", "error"):
            status = item  # type: ignore[assignment]
        elif item.startswith("version "):
            pass
        elif i == 0:
            model = item
    return model, new_tokens, tps, status


def _title(title: str | None, messages: Sequence[Message], hint: str | None) -> str:
    """The file's own title, else the start of the first user message, else the file name."""
    if title and title.strip():
        return title.strip()[:200]
    first = next((m.content for m in messages if m.role == "user" and m.content.strip()), "")
    return " ".join(first.split())[:60] or (hint or "")[:200] or "Imported chat"


def _optional_str(obj: Mapping[str, Any], key: str, at: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ImportFormatError(f"{at}.{key}", f"expected text or null, not {_kind(value)}.")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
