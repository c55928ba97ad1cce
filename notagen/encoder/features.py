"""Whole-piece features, exactly as CLaMP 2's `extract_clamp2.py --normalize`.

A piece (single-`%` lines removed, as NotaGen's scorer does) is patchified with the special patches and no
truncation (n patches), cut into consecutive `patch_length` chunks whose last one is replaced by the final
`patch_length` patches, each chunk mean-pooled (+ projected in CLaMP mode), and the chunk vectors averaged with
weight `patch_length` per full chunk and `n mod patch_length` for the last (the reference's quirk: the last vector
covers a full window but weighs only the remainder). M3 mode: mean-pooled states, no projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from notagen.abc.text import strip_prompt_lines
from notagen.encoder.model import M3Model
from notagen.encoder.patchilizer import M3Patchilizer


def segments(n: int, length: int) -> list[tuple[int, int, int]]:
    """(start, end, weight) of each chunk of an n-patch piece: consecutive chunks, the last replaced by the final
    `length` patches and weighted by the remainder."""
    if n <= 0:
        raise ValueError("a piece needs at least one patch")
    starts = list(range(0, n, length))
    spans = [(s, min(s + length, n)) for s in starts]
    spans[-1] = (max(0, n - length), n)
    remainder = n % length
    weights = [length] * (len(spans) - 1) + [remainder if remainder else length]
    if n < length:
        weights = [n]
    return [(s, e, w) for (s, e), w in zip(spans, weights)]


@dataclass
class FeatureExtractor:
    """Global feature per piece from an M3-style model.

    mode: "clamp2" = pooled + projected (needs `model.music_proj`), "m3" = pooled states only.
    name / weights_id name the encoder in every report.
    """

    model: M3Model
    mode: Literal["clamp2", "m3"] = "m3"
    name: str = "m3"
    weights_id: str = "unknown"
    batch_size: int = 8
    strip_comments: bool = True
    strip_default_length: bool = False  # CLaMP 3 removes "L:1/8" lines inside its patchilizer; CLaMP 2 does not
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode == "clamp2" and self.model.music_proj is None:
            raise ValueError("clamp2 mode needs a model with a music projection")
        self.patchilizer = M3Patchilizer(self.model.config.patch_size, self.model.config.patch_length)
        self.model.eval().to(self.device)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def piece_patches(self, text: str) -> list[list[int]]:
        if self.strip_comments:
            text = strip_prompt_lines(text)
        if self.strip_default_length:
            text = text.replace("L:1/8\n", "")
        return self.patchilizer.encode(text, add_special_patches=True)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Global features [len(texts), H] (float32)."""
        length = self.model.config.patch_length
        chunks: list[tuple[int, list[list[int]], int]] = []  # (piece index, chunk patches, weight)
        for index, text in enumerate(texts):
            patches = self.piece_patches(text)
            for start, end, weight in segments(len(patches), length):
                chunks.append((index, patches[start:end], weight))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        totals = np.zeros(len(texts), dtype=np.float64)
        # Batch chunks of similar length: padding is masked, so it changes nothing but the cost.
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i][1]))
        project = self.mode == "clamp2"
        for b in range(0, len(order), self.batch_size):
            batch = [chunks[i] for i in order[b:b + self.batch_size]]
            width = max(len(c[1]) for c in batch)
            patches = torch.zeros(len(batch), width, self.patchilizer.patch_size, dtype=torch.long)
            masks = torch.zeros(len(batch), width, dtype=torch.long)
            for row, (_, chunk, _) in enumerate(batch):
                patches[row, :len(chunk)] = torch.tensor(chunk)
                masks[row, :len(chunk)] = 1
            vectors = self.model.pooled(patches.to(self.device), masks.to(self.device), project=project)
            vectors = vectors.double().cpu().numpy()
            for row, (index, _, weight) in enumerate(batch):
                sums[index] += weight * vectors[row]
                totals[index] += weight
        return (sums / totals[:, None]).astype(np.float32)

    def describe(self) -> dict[str, str | int]:
        return {"encoder": self.name, "weights": self.weights_id, "mode": self.mode, "dim": self.dim}
