"""chatwidget: chat with local Hugging Face models in a Jupyter widget.

Switch models mid-conversation and watch downloads in a download manager, without ever
blocking the chat. Start with :class:`ChatWidget`.
"""

from __future__ import annotations

from chatwidget import errors, offline
from chatwidget.catalog import DEFAULT_CATALOG, ModelSpec
from chatwidget.engine.types import GenerationResult, GenerationSettings, Usage
from chatwidget.session.reply import ReplyHandle
from chatwidget.widget import ChatWidget

__all__ = [
    "DEFAULT_CATALOG",
    "ChatWidget",
    "GenerationResult",
    "GenerationSettings",
    "ModelSpec",
    "ReplyHandle",
    "Usage",
    "errors",
    "offline",
]
__version__ = "0.1.0"
