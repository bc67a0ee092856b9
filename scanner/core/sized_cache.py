"""A least-recently-used cache bounded by the bytes its entries are said to cost.

A remote party chooses what the scanner caches (certificates of any size, names of
any length): a cache bounded by entries alone holds as much as they choose. Each
entry here is put with its cost in bytes (the caller's estimate, key included);
the oldest entries go until the total is within the budget, and an entry that
alone costs more than a quarter of it is not kept at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class SizedCache(Generic[_K, _V]):
    """LRU of values by key, at most `budget` bytes of stated cost in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[_K, tuple[_V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: _K) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: _K, value: _V, cost: int) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.used -= old[1]
        if cost > self.budget // 4:
            return
        self._entries[key] = (value, cost)
        self.used += cost
        while self.used > self.budget:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.used -= dropped

    def clear(self) -> None:
        self._entries.clear()
        self.used = 0
