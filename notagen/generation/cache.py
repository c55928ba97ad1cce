"""A preallocated key/value cache that the generation engine owns and hands to the model's attention layers.

Rows are *right-aligned*: every row's newest entry sits at slot `length - 1`, and row b's entries occupy slots
`starts[b] … length - 1`. A batched step therefore writes all rows at the same slot; rows with a shorter context
are masked on the left (`attention_mask`) and get per-row positions (`positions`). Rows can be dropped or reordered
(`select_rows`), replaced by a freshly prefilled context (`place_row`), and the buffers are compacted when the
shared pointer reaches the capacity (`compact`).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per-layer [B, heads, capacity, head_dim] key and value buffers with a shared length pointer."""

    def __init__(self, layers: int, batch: int, heads: int, head_dim: int, capacity: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, zeroed: bool = True) -> None:
        """`zeroed=False` leaves the slots uninitialised (untouched pages use no memory until written): only for
        a cache whose rows all start at slot 0 and are never masked, so no slot is read before it is written."""
        shape = (batch, heads, capacity, head_dim)
        self.layers = layers
        self.capacity = capacity
        allocate = torch.zeros if zeroed else torch.empty
        self.keys = [allocate(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [allocate(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.length = 0
        self.starts = torch.zeros(batch, dtype=torch.long, device=device)

    @property
    def batch(self) -> int:
        return self.keys[0].size(0) if self.layers else 0

    @property
    def device(self) -> torch.device:
        return self.starts.device

    def reset(self) -> None:
        """Forget every entry (buffers are reused)."""
        self.length = 0
        self.starts.zero_()

    # -- the model-facing protocol ----------------------------------------------------------------------------
    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the T new keys/values of `layer` at the pointer and return all of them; the last layer advances."""
        T = k.size(2)
        end = self.length + T
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} > capacity {self.capacity}")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        if layer == self.layers - 1:
            self.length = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    # -- ragged rows ------------------------------------------------------------------------------------------
    def row_lengths(self) -> Tensor:
        """Entries held by each row: [B]."""
        return self.length - self.starts

    def positions(self) -> Tensor:
        """Position of the next entry of each row, [B, 1] (positions are counted from each row's own start)."""
        return (self.length - self.starts).unsqueeze(1)

    def attention_mask(self) -> Tensor | None:
        """Boolean mask [B, 1, 1, length + 1] (True = attend) for one new query per row; None when rows are aligned."""
        if not bool(self.starts.any()):
            return None
        slots = torch.arange(self.length + 1, device=self.device)
        return (slots.unsqueeze(0) >= self.starts.unsqueeze(1))[:, None, None, :]

    def select_rows(self, rows: list[int] | Tensor) -> None:
        """Keep only `rows`, in that order (drop finished pieces, reorder the batch)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.starts = self.starts.index_select(0, index)
        if len(index) and self.length:
            self.compact()

    def add_rows(self, count: int) -> None:
        """Append `count` empty rows (to be filled with `place_row`)."""
        if count <= 0:
            return
        for store in (self.keys, self.values):
            for layer, buffer in enumerate(store):
                extra = buffer.new_zeros((count, *buffer.shape[1:]))
                store[layer] = torch.cat([buffer, extra], dim=0)
        self.starts = torch.cat([self.starts, self.starts.new_full((count,), self.length)])

    def compact(self) -> None:
        """Shift every row left by the smallest start, so the pointer moves back as far as possible."""
        shift = int(self.starts.min()) if self.batch else self.length
        if shift <= 0:
            return
        keep = self.length - shift
        for store in (self.keys, self.values):
            for buffer in store:
                buffer[:, :, :keep] = buffer[:, :, shift:self.length].clone()
        self.starts -= shift
        self.length = keep

    def _shift_right(self, amount: int) -> None:
        if self.length + amount > self.capacity:
            self.compact()
        if self.length + amount > self.capacity:
            raise RuntimeError(f"KV cache cannot hold {self.length + amount} entries (capacity {self.capacity})")
        for store in (self.keys, self.values):
            for buffer in store:
                buffer[:, :, amount:amount + self.length] = buffer[:, :, :self.length].clone()
        self.starts += amount
        self.length += amount

    def place_row(self, row: int, source: KVCache) -> None:
        """Replace row `row` by the single-row cache `source` (a prefilled context), right-aligned at the pointer."""
        count = source.length
        if count > self.length:
            self._shift_right(count - self.length)
        begin = self.length - count
        for layer in range(self.layers):
            self.keys[layer][row, :, begin:self.length] = source.keys[layer][0, :, :count]
            self.values[layer][row, :, begin:self.length] = source.values[layer][0, :, :count]
        self.starts[row] = begin

    def ensure_room(self, new: int = 1) -> None:
        """Compact when the next `new` entries would not fit."""
        if self.length + new > self.capacity:
            self.compact()
        if self.length + new > self.capacity:
            raise RuntimeError(f"KV cache full: {self.length} + {new} > capacity {self.capacity}")
