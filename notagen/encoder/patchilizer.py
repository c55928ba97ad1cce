"""Text ⇄ patches in the M3 / CLaMP 2 format.

A piece becomes one patch per header line (`K:`, `V:`, `%%…`) and one patch per bar of every other line: a bar is
its text plus the barline after it, a leading barline is glued to the first bar and the line's newline to its last
bar. Text after a line's last barline is dropped, exactly as the reference does. A patch is `[bos] + ord(chars) +
[eos]`, cut to `patch_size` and right-padded with `pad`. MTF text (lines of MIDI messages, first line
`ticks_per_beat …`) merges consecutive messages of one type into a patch while they fit.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from unidecode import unidecode

from notagen.patchilizer import BAR_DELIMITERS, BAR_SPLIT  # the same bar split as NotaGen's own patches

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
MASK_ID = 3
VOCAB_SIZE = 128
PATCH_SIZE = 64
PATCH_LENGTH = 512

_LINES = re.compile(r".*?\n|.+$")


def split_bars(line: str) -> list[str]:
    """Bars of one body line, each with its closing barline; a leading barline joins the first bar.

    Text after the last barline (or a line without barlines) yields nothing, as in the reference.
    """
    parts = [part for part in BAR_SPLIT.split(line) if part]
    if not parts:
        return []
    if parts[0] in BAR_DELIMITERS and len(parts) > 1:
        parts = [parts[0] + parts[1]] + parts[2:]
    return [parts[2 * i] + parts[2 * i + 1] for i in range(len(parts) // 2)]


def is_header_line(line: str) -> bool:
    """A line that is one patch on its own: `X:`-style field or `%%` directive."""
    return len(line) > 1 and ((line[0].isalpha() and line[1] == ":") or line.startswith("%%"))


@dataclass(frozen=True)
class M3Patchilizer:
    """Encodes text to M3 patches: lists of `patch_size` ids in [0, 128)."""

    patch_size: int = PATCH_SIZE
    patch_length: int = PATCH_LENGTH

    def split_patches(self, text: str) -> list[str]:
        """The patch texts of a piece (before id conversion and truncation)."""
        text = unidecode(text)
        lines = [line for line in _LINES.findall(text) if line]
        if not lines:
            return []
        if lines[0].split(" ")[0] == "ticks_per_beat":
            return self._split_mtf(lines)
        patches: list[str] = []
        for line in lines:
            if is_header_line(line):
                patches.append(line)
                continue
            bars = split_bars(line)
            if bars:
                bars[-1] += "\n"
                patches.extend(bars)
        return patches

    def _split_mtf(self, lines: list[str]) -> list[str]:
        patches: list[str] = []
        current = ""
        for line in lines:
            words = line.split(" ")
            params = " ".join(words[1:])
            if current.startswith(words[0]) and len(current) + len(params) <= self.patch_size - 2:
                current = current[:-1] + "\t" + params
            else:
                if current:
                    patches.append(current)
                current = line
        if current:
            patches.append(current)
        return patches

    def text_to_patch(self, text: str) -> list[int]:
        ids = ([BOS_ID] + [ord(c) for c in text] + [EOS_ID])[: self.patch_size]
        return ids + [PAD_ID] * (self.patch_size - len(ids))

    @property
    def bos_patch(self) -> list[int]:
        """The leading special patch: what the reference's `chr(bos) * size` becomes (all bos)."""
        return self.text_to_patch(chr(BOS_ID) * self.patch_size)

    @property
    def eos_patch(self) -> list[int]:
        """The closing special patch: bos followed by eos ids (the reference wraps `chr(eos) * size`)."""
        return self.text_to_patch(chr(EOS_ID) * self.patch_size)

    def encode(self, text: str, add_special_patches: bool = False, truncate: bool = False,
               rng: random.Random | None = None) -> list[list[int]]:
        """Patches of a piece. `truncate` keeps `patch_length` patches: the head, or with `rng` a random
        head / tail / middle window (as M3's training loader does)."""
        texts = self.split_patches(text)
        patches = [self.text_to_patch(t) for t in texts]
        if add_special_patches:
            patches = [self.bos_patch] + patches + [self.eos_patch]
        if truncate and len(patches) > self.patch_length:
            patches = crop_window(patches, self.patch_length, rng)
        return patches

    @staticmethod
    def patch_to_text(patch: Sequence[int]) -> str:
        return "".join(chr(i) for i in patch if i > MASK_ID)

    def decode(self, patches: Sequence[Sequence[int]]) -> str:
        return "".join(self.patch_to_text(p) for p in patches)


def crop_window(items: list, length: int, rng: random.Random | None) -> list:
    """A `length` window: the head without rng, else head, tail or a random middle with equal odds."""
    if len(items) <= length:
        return items
    if rng is None:
        return items[:length]
    choice = rng.choice(("head", "tail", "middle"))
    if choice == "head":
        return items[:length]
    if choice == "tail":
        return items[-length:]
    start = rng.randint(1, len(items) - length)
    return items[start:start + length]
