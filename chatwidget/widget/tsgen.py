"""Generate ``js/src/protocol.ts`` from :mod:`chatwidget.widget.protocol`.

    python -m chatwidget.widget.tsgen          # rewrite js/src/protocol.ts
    python -m chatwidget.widget.tsgen --check  # exit 1 if it is out of date

The output is already formatted as prettier (print width 100) formats it, so the committed
file passes ``prettier --check`` and a test can compare it with a fresh rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from chatwidget.widget import protocol as p

TARGET = Path(__file__).resolve().parents[2] / "js" / "src" / "protocol.ts"
WIDTH = 100

#: Named type aliases, emitted as ``export type``; matched by value in field types.
ALIASES: dict[str, Any] = {
    "StateLabel": p.StateLabel,
    "Role": p.Role,
    "MessageStatus": p.MessageStatus,
    "ExportFormat": p.ExportFormat,
    "CompareMode": p.CompareMode,
    "CompareStatus": p.CompareStatus,
    "ServerStatus": p.ServerStatus,
}
INTERFACES: tuple[type, ...] = (
    p.FitOption,
    p.AbsentFitOption,
    p.FitInfo,
    p.Residency,
    p.ModelRow,
    p.MessageRow,
    p.ConversationRow,
    p.Transcript,
    p.DownloadRow,
    p.SettingsDict,
    p.SettingsPatch,
    p.SwitchNotice,
    p.ErrorNotice,
    p.RemoteNoticeRow,
    p.ServerRow,
    p.SettingBounds,
    p.StorageWarning,
    p.StorageState,
    p.ExportFile,
    p.WidgetState,
    p.CompareColumnRow,
    p.CompareState,
    p.Delta,
    p.CompareDelta,
    p.SyncNotice,
    p.Reply,
)


def ts_type(hint: Any, *, alias: bool = True) -> str:
    """The TypeScript spelling of a Python annotation."""
    if alias:
        for name, value in ALIASES.items():
            if hint == value:
                return name
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return ts_type(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(ts_type(a) for a in args)
    if origin is list:
        inner = ts_type(args[0])
        return f"({inner})[]" if "|" in inner else f"{inner}[]"
    if origin is dict:
        return f"Record<string, {ts_type(args[1])}>"
    if typing.is_typeddict(hint):
        return str(hint.__name__)
    simple = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no TypeScript spelling for {hint!r}")


def _fields(td: type) -> list[tuple[str, bool, str]]:
    """(name, optional, TS type) of each field of a TypedDict."""
    out = []
    total = getattr(td, "__total__", True)
    for name, hint in typing.get_type_hints(td, include_extras=True).items():
        if typing.get_origin(hint) is typing.NotRequired:
            out.append((name, True, ts_type(typing.get_args(hint)[0])))
        else:
            out.append((name, not total, ts_type(hint)))
    return out


def _doc(td: type) -> str:
    first = (td.__doc__ or "").strip().split("\n\n")[0]
    doc = " ".join(line.strip() for line in first.splitlines())
    return f"/** {doc} */\n" if doc else ""


def _union(name: str, members: list[str]) -> str:
    one_line = f"export type {name} = {' | '.join(members)};"
    if len(one_line) <= WIDTH:
        return one_line + "\n"
    return f"export type {name} =\n" + "".join(f"  | {m}\n" for m in members)[:-1] + ";\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool | int | float):
        return _number(value)
    if isinstance(value, dict):
        items = ", ".join(f"{k}: {_literal(v)}" for k, v in value.items())
        return f"{{ {items} }}"
    raise TypeError(f"no TypeScript literal for {value!r}")


def _object(name: str, annotation: str, value: dict[str, Any]) -> str:
    lines = [f"export const {name}: {annotation} = {{"]
    lines += [f"  {k}: {_literal(v)}," for k, v in value.items()]
    return "\n".join(lines) + "\n};\n"


def _array(name: str, annotation: str, items: list[str]) -> str:
    one_line = f"export const {name}: {annotation} = [{', '.join(items)}];"
    if len(one_line) <= WIDTH:
        return one_line + "\n"
    return f"export const {name}: {annotation} = [\n" + "".join(f"  {i},\n" for i in items) + "];\n"


def render() -> str:
    """The text of ``js/src/protocol.ts``."""
    parts = [
        "// Generated from chatwidget/widget/protocol.py by `python -m chatwidget.widget.tsgen`.\n"
        "// Do not edit: change the Python and regenerate (a test checks the two agree).\n"
    ]
    for name, value in ALIASES.items():
        members = [json.dumps(a) for a in typing.get_args(value)]
        parts.append(_union(name, members))
    for td in INTERFACES:
        body = "".join(
            f"  {name}{'?' if optional else ''}: {ts};\n" for name, optional, ts in _fields(td)
        )
        parts.append(f"{_doc(td)}export interface {td.__name__} {{\n{body}}}\n")
    intents = []
    for intent in p.INTENTS:
        fields = [f"{n}{'?' if o else ''}: {t}" for n, o, t in _fields(intent)]
        intents.append("{ " + "; ".join(fields) + " }")
    parts.append("/** What the front end may ask; the kernel answers each with a Reply. */\n")
    parts.append(_union("Intent", intents))
    parts.append("export type Request = Intent & { id: string };\n")
    parts.append("export type KernelMessage = Delta | SyncNotice | Reply;\n")
    keys = [json.dumps(name) for name in typing.get_type_hints(p.WidgetState)]
    parts.append(_array("STATE_KEYS", "(keyof WidgetState)[]", keys))
    consts = "".join(
        f"export const {name} = {_literal(value)};\n" for name, value in p.CONSTANTS.items()
    )
    parts.append(consts)
    parts.append(_object("DEFAULT_SETTINGS", "SettingsDict", dict(p.DEFAULT_SETTINGS)))
    parts.append(
        _object("SETTINGS_BOUNDS", "Record<string, SettingBounds>", dict(p.SETTINGS_BOUNDS))
    )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print(
                f"{TARGET} is out of date: run python -m chatwidget.widget.tsgen", file=sys.stderr
            )
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
