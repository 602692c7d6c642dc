"""The last few chat-template results per tokenizer, so the same prompt is not built twice.

Regenerate, Retry and a second look at the same context (fitting checks the kept messages,
then the prompt is built from them) ask for the same messages again; rendering the template
and tokenizing costs about 0.3 ms each time on a short prompt, tens of milliseconds on a long
one. Entries are keyed by the exact ``(role, content)`` pairs, held per tokenizer (weakly:
an unloaded model's entries go with it) and shared: callers must not change them.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: Results kept per tokenizer (a 32k-token prompt's ids are about 1 MB).
ENTRIES = 4

Key = tuple[tuple[str, str], ...]

_lock = threading.Lock()
_caches: weakref.WeakKeyDictionary[Any, OrderedDict[Key, Any]] = weakref.WeakKeyDictionary()


def cached_template(
    tokenizer: Any, chat: Sequence[Mapping[str, str]], build: Callable[[], Any]
) -> Any:
    """``build()``'s result for ``chat`` on ``tokenizer``, from the cache when it has it."""
    key: Key = tuple((m["role"], m["content"]) for m in chat)
    with _lock:
        cache = _caches.get(tokenizer)
        if cache is not None and key in cache:
            cache.move_to_end(key)
            return cache[key]
    result = build()  # outside the lock: other models' prompts do not wait for this one
    with _lock:
        cache = _caches.setdefault(tokenizer, OrderedDict())
        cache[key] = result
        while len(cache) > ENTRIES:
            cache.popitem(last=False)
    return result
