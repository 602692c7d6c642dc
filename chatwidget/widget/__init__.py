"""The widget side: the anywidget, its single trait writer, and the wire format.

- :mod:`~chatwidget.widget.chat_widget`: ``ChatWidget``: traits, the publisher, dispatch (thin;
  the Python API's logic is :class:`chatwidget.session.Session`).
- :mod:`~chatwidget.widget.sync`: ``Publisher``, the one thread that writes traits and sends
  deltas, each with a sequence number.
- :mod:`~chatwidget.widget.views`: session state -> trait values, one part at a time.
- :mod:`~chatwidget.widget.protocol`: the wire vocabulary; ``js/src/protocol.ts`` is generated
  from it by :mod:`~chatwidget.widget.tsgen`.
- :mod:`~chatwidget.widget.intents`: checks of front-end messages (shapes, size limits).
- :mod:`~chatwidget.widget.fallback`: the Markdown summary for static renderers.
"""

from __future__ import annotations

from chatwidget.session.reply import ReplyHandle
from chatwidget.widget.chat_widget import ChatWidget

__all__ = ["ChatWidget", "ReplyHandle"]
