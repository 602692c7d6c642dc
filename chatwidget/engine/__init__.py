"""The model engine: load models from the local HF cache, stream replies, stop, swap.

:class:`Engine` is the facade the orchestrator drives (``EnginePort``). Modules:

- ``loader``: find a model in the cache (``local_files_only``) and ``from_pretrained`` it;
- ``memory``: free RAM/GPU memory, what a model needs (from :mod:`chatwidget.fit`), freeing
  tracebacks;
- ``pool``: the warm pool in LRU order and its eviction rule;
- ``streaming``: chat template, streamer thread, stop criteria and usage.
"""

from chatwidget.engine.engine import Engine

__all__ = ["Engine"]
