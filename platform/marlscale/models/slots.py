"""`SlotTable`: a parameter with one row per agent slot, stored in blocks of slots.

The slot embeddings of the agent network and QMIX's per-slot hypernetwork rows are the only
parameters whose size grows with N. Under incremental learning the policy controls a prefix of
the slots (0..K-1), so a forward pass reads only the blocks that prefix covers: the others take
no part in the graph, get no gradient (None), and the optimizer skips them. An update then
costs what the K trained agents cost, however large N is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BLOCKS = 20
"""A table of N slots is kept in at most this many blocks of ceil(N / BLOCKS) slots."""


class SlotTable(nn.Module):
    """Rows [N, *shape] in blocks; `prefix(k)` is rows 0..k-1, `weight` the whole table."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.n = int(values.shape[0])
        self.block = max(1, math.ceil(self.n / BLOCKS))
        self.blocks = nn.ParameterList(
            [nn.Parameter(values[i:i + self.block].detach().clone())
             for i in range(0, self.n, self.block)])

    def prefix(self, k: int) -> torch.Tensor:
        """Rows 0..k-1 [k, *shape], built from the blocks they cover only."""
        used = math.ceil(k / self.block)
        if used == 0:
            return self.blocks[0][:0]
        parts = [self.blocks[i] for i in range(used)]
        table = parts[0] if used == 1 else torch.cat(parts)
        return table[:k]

    @property
    def weight(self) -> torch.Tensor:
        """The whole table [N, *shape] (a copy when it has several blocks)."""
        return self.prefix(self.n)

    def fill(self, start: int, stop: int, value: torch.Tensor) -> None:
        """Rows start..stop-1 take `value` (broadcast), in place, outside autograd."""
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                low = i * self.block
                lo, hi = max(start, low), min(stop, low + len(block))
                if lo < hi:
                    block[lo - low:hi - low] = value

    def resized(self, n: int, trained: int, init: str = "mean") -> SlotTable:
        """A table of n slots: rows < min(N, n) kept, new rows at the mean of the first
        `trained` rows (`init="mean"`) or drawn like nn.Embedding's (`"initialised"`)."""
        with torch.no_grad():
            old = self.weight.detach()
            keep = min(n, self.n)
            if init == "mean":
                new = old[:trained].mean(0).expand(n, *old.shape[1:]).clone()
            else:
                new = torch.randn(n, *old.shape[1:], dtype=old.dtype)
            new[:keep] = old[:keep]
        table = SlotTable(new.to(old.device))
        table.requires_grad_(self.blocks[0].requires_grad)
        return table
