"""A sum tree for proportional prioritized replay (Schaul et al. 2016).

Kept apart from the replay buffer because it is pure array bookkeeping with its own test: leaves
hold priorities, every inner node the sum of its children, so drawing an index proportional to its
priority and changing one priority are both O(log capacity). Everything is vectorised over a
batch so that a 256-sample draw costs a few numpy calls per tree level, not 256 Python loops.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Priorities for ``capacity`` slots; ``sample`` draws slots proportional to them."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._leaves = 1
        while self._leaves < self.capacity:
            self._leaves *= 2
        # Heap layout: node 1 is the root, children of i are 2i and 2i+1, leaves start at _leaves.
        self._tree = np.zeros(2 * self._leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self._tree[1])

    def get(self, slots: np.ndarray) -> np.ndarray:
        return self._tree[self._leaves + np.asarray(slots, dtype=np.int64)]

    def set(self, slots: np.ndarray | int, priorities: np.ndarray | float) -> None:
        """Set leaf priorities and repair the sums above them (duplicates: the last wins)."""
        slots = np.atleast_1d(np.asarray(slots, dtype=np.int64))
        priorities = np.broadcast_to(np.asarray(priorities, dtype=np.float64), slots.shape)
        if slots.size == 0:
            return
        if slots.min() < 0 or slots.max() >= self.capacity:
            raise IndexError(f"SumTree slot out of range [0, {self.capacity})")
        if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
            raise ValueError("priorities must be finite and >= 0")
        nodes = slots + self._leaves
        self._tree[nodes] = priorities
        nodes = np.unique(nodes // 2)
        while nodes.size and nodes[0] >= 1:
            self._tree[nodes] = self._tree[2 * nodes] + self._tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slots whose cumulative-priority interval contains each value in [0, total)."""
        values = np.asarray(values, dtype=np.float64).copy()
        nodes = np.ones(values.shape, dtype=np.int64)
        depth = self._leaves.bit_length() - 1   # every leaf sits at this depth below the root
        for _ in range(depth):
            left = 2 * nodes
            left_sum = self._tree[left]
            go_right = values >= left_sum
            # Never walk into an empty right subtree because of float round-off at the edge.
            go_right &= self._tree[left + 1] > 0
            values = np.where(go_right, values - left_sum, values)
            nodes = np.where(go_right, left + 1, left)
        return np.minimum(nodes - self._leaves, self.capacity - 1)

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` slots drawn with replacement, stratified over the total mass."""
        total = self.total
        if total <= 0:
            raise ValueError("cannot sample from a SumTree whose priorities are all zero")
        edges = (np.arange(count) + rng.random(count)) * (total / count)
        return self.find(np.minimum(edges, np.nextafter(total, 0)))

    def state(self) -> np.ndarray:
        return self._tree[self._leaves:self._leaves + self.capacity].copy()

    def load(self, leaves: np.ndarray) -> None:
        if leaves.shape != (self.capacity,):
            raise ValueError(f"SumTree state has shape {leaves.shape}, expected ({self.capacity},)")
        self._tree[:] = 0
        self.set(np.arange(self.capacity), leaves)
