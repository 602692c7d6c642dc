"""The widget side: the anywidget, its single trait writer, and the wire format.

- :mod:`~chatwidget.widget.chat_widget`: ``ChatWidget``: traits, message dispatch, Python API.
- :mod:`~chatwidget.widget.sync`: ``TraitPublisher``, the one thread that writes traits.
- :mod:`~chatwidget.widget.views`: kernel state -> trait values (pure functions).
- :mod:`~chatwidget.widget.protocol`: trait shapes and messages, mirrored in ``js/src/protocol.ts``.
- :mod:`~chatwidget.widget.conversation`: histories, titles and export.
- :mod:`~chatwidget.widget.reply`: the handle ``ChatWidget.send`` returns.
- :mod:`~chatwidget.widget.fallback`: the Markdown summary for static renderers.
"""

from __future__ import annotations

from chatwidget.widget.chat_widget import ChatWidget
from chatwidget.widget.reply import ReplyHandle

__all__ = ["ChatWidget", "ReplyHandle"]
