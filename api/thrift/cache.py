"""A byte-bounded LRU of pre-encoded Thrift answers, keyed by (kind, object id, version, ...).

Keys carry the object's version, so a change never serves stale bytes: old entries just age out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class EncodedCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def get_many(self, keys: list[Hashable]) -> list[bytes | None]:
        """Like :meth:`get` for many keys, under one lock (1,000-partition answers)."""
        out: list[bytes | None] = []
        with self._lock:
            data = self._data
            for key in keys:
                value = data.get(key)
                if value is not None:
                    data.move_to_end(key)
                out.append(value)
            hits = sum(v is not None for v in out)
            self.hits += hits
            self.misses += len(out) - hits
        return out

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._data[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self.size -= len(evicted)

    def __len__(self) -> int:
        return len(self._data)
