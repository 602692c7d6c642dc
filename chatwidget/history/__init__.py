"""Conversations that last: a tree of messages with branches, saved to SQLite as they change.

The session uses one :class:`History` per widget::

    history = History.open(history=None, workspace=None)   # the default file; False: memory
    conv = history.create_conversation(model="org/model")
    user = history.add_user_message(conv.id, "Hello")
    reply = history.begin_reply(conv.id, "org/model")       # status "streaming"
    for piece in stream:                                     # on the reply thread
        history.append_text(reply.id, piece)                 # O(1); saved ≤ once a second
    history.finish_reply(reply.id, status="done", text=result.text, usage=result.usage)
    history.chat_messages(conv.id)       # the active branch for the chat template, O(turns)
    again = history.regenerate(reply.id, "org/model")        # a sibling reply: "2 / 2"
    history.versions(again.id).label                         # "2 / 2"
    history.select_version(again.id, 0)                      # show the first reply again
    history.edit(user.id, "Hello there")                     # a new branch from that point
    history.export_json(conv.id); history.import_conversation(path_or_list)
    history.warning                      # a StoreWarning while saving fails (chat goes on)

Modules, one job each:

- :mod:`~chatwidget.history.types`: ``Message``, ``Usage``, ``ConversationInfo``,
  ``Versions``, ``WorkspaceInfo``, ``Comparison``, ``StoreWarning``.
- :mod:`~chatwidget.history.tree`: ``ConversationTree``, branches and the active branch.
- :mod:`~chatwidget.history.history`: ``History``, the facade and its threading rules.
- :mod:`~chatwidget.history.store`: the ``Store`` interface and ``MemoryStore``.
- :mod:`~chatwidget.history.sqlite_store`: ``SQLiteStore``, the file, its writer thread and
  its bad states; :mod:`~chatwidget.history.sql` its statements;
  :mod:`~chatwidget.history.faults` what a failure means (warning kinds, moving a file aside).
- :mod:`~chatwidget.history.checkpoint`: ``Checkpointer``, ≤ one save per second per reply.
- :mod:`~chatwidget.history.schema`: tables, ``schema_version`` and migrations.
- :mod:`~chatwidget.history.changes`: the rows and atomic changes stores commit.
- :mod:`~chatwidget.history.formats`: JSON and Markdown export, import of either.
- :mod:`~chatwidget.history.location`: the default file and the default workspace.
"""

from chatwidget.history.checkpoint import Checkpointer
from chatwidget.history.errors import (
    HistoryError,
    ImportFormatError,
    InvalidVersionError,
    UnknownMessageError,
)
from chatwidget.history.formats import ImportedConversation
from chatwidget.history.history import ACTIVE_KEY, HEAD, History, HistoryOption
from chatwidget.history.location import (
    DEFAULT_WORKSPACE,
    HISTORY_ENV,
    default_path,
    default_workspace,
)
from chatwidget.history.sqlite_store import SQLiteStore
from chatwidget.history.store import MemoryStore, Store
from chatwidget.history.tree import ConversationTree
from chatwidget.history.types import (
    Comparison,
    ComparisonResult,
    ConversationInfo,
    Message,
    Role,
    Status,
    StoreWarning,
    Usage,
    Versions,
    WorkspaceInfo,
)

__all__ = [
    "ACTIVE_KEY",
    "DEFAULT_WORKSPACE",
    "HEAD",
    "HISTORY_ENV",
    "Checkpointer",
    "Comparison",
    "ComparisonResult",
    "ConversationInfo",
    "ConversationTree",
    "History",
    "HistoryError",
    "HistoryOption",
    "ImportFormatError",
    "ImportedConversation",
    "InvalidVersionError",
    "MemoryStore",
    "Message",
    "Role",
    "SQLiteStore",
    "Status",
    "Store",
    "StoreWarning",
    "UnknownMessageError",
    "Usage",
    "Versions",
    "WorkspaceInfo",
    "default_path",
    "default_workspace",
]
