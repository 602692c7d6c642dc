"""The model engine: load models from the local HF cache, stream replies, stop, swap."""

from chatwidget.engine.engine import Engine

__all__ = ["Engine"]
