"""chatwidget: chat with local Hugging Face models in a Jupyter widget."""

from __future__ import annotations

from chatwidget.catalog import DEFAULT_CATALOG, ModelSpec

__all__ = ["DEFAULT_CATALOG", "ModelSpec"]
__version__ = "0.1.0"
