"""Text ⇄ patches, exactly in the official NotaGen format.

A piece is split into *units*: every metadata line (prompt lines, `%%score`, `L:`, `M:`, `K:`, `V:` …) is one unit;
every body line is prefixed with its stream annotation `[r:i/j]` (lines so far / lines still to come) and split into
bars. A unit becomes ⌈(len+1)/16⌉ patches: an EOS character is appended unless the length is already a multiple of
16 (an official quirk we keep for checkpoint compatibility), then it is cut into 16-character chunks and the last
one is right-padded with 0. A sequence is the BOS patch, the units' patches and, for training, the EOS patch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from notagen.abc.text import body_start
from notagen.config import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE
from notagen.errors import InputError

BAR_DELIMITERS = ("|:", "::", ":|", "[|", "||", "|]", "|")
BAR_SPLIT = re.compile("(" + "|".join(map(re.escape, BAR_DELIMITERS)) + ")")
_STREAM_PREFIX = re.compile(r"^\[r:\d+/\d+\]")


def split_lines(text: str) -> list[str]:
    """Non-empty lines, each ending in a newline (the reference drops blank lines)."""
    return [line + "\n" for line in text.split("\n") if line]


def split_bars(line: str) -> list[str]:
    """Split one body line into bar units, as the reference's `split_bars` does.

    The text before the first barline is a unit; every barline is glued to the text after it; the line's final
    barline plus newline (which names no voice) is merged into the previous unit.
    """
    parts = [part for part in BAR_SPLIT.split(line) if part]
    if len(parts) <= 1:
        return parts
    if parts[0] in BAR_DELIMITERS:
        units = ["".join(parts[i:i + 2]) for i in range(0, len(parts), 2)]
    else:
        units = [parts[0]] + ["".join(parts[i:i + 2]) for i in range(1, len(parts), 2)]
    if len(units) > 1 and "V" not in units[-1]:
        units[-2] += units[-1]
        units.pop()
    return units


def add_stream_annotations(body_lines: Sequence[str]) -> list[str]:
    """Prefix body line i of n with `[r:i/(n-1-i)]`."""
    n = len(body_lines)
    return [f"[r:{i}/{n - 1 - i}]{line}" for i, line in enumerate(body_lines)]


@dataclass(frozen=True)
class Patchilizer:
    """Encodes ABC text into patches of character ids and back."""

    patch_size: int = 16
    patch_length: int = 1024
    stream: bool = True

    @property
    def bos_patch(self) -> list[int]:
        return [BOS_ID] * (self.patch_size - 1) + [EOS_ID]

    @property
    def eos_patch(self) -> list[int]:
        return [BOS_ID] + [EOS_ID] * (self.patch_size - 1)

    # -- units ------------------------------------------------------------------------------------------------
    def unit_to_patches(self, unit: str, add_eos: bool = True, pad_last: bool = True) -> list[list[int]]:
        """One unit → its patches (EOS appended unless the length is a multiple of the patch size)."""
        ids = [ord(char) for char in unit]
        bad = next((char for char in unit if ord(char) >= VOCAB_SIZE), None)
        if bad is not None:
            raise InputError(f"character {bad!r} is not ASCII; ABC text must be ASCII-folded before patching")
        if add_eos and len(ids) % self.patch_size != 0:
            ids.append(EOS_ID)
        patches = [ids[i:i + self.patch_size] for i in range(0, len(ids), self.patch_size)]
        if pad_last and patches and len(patches[-1]) < self.patch_size:
            patches[-1] = patches[-1] + [PAD_ID] * (self.patch_size - len(patches[-1]))
        return patches

    def split_text(self, text: str, add_stream: bool | None = None) -> tuple[list[str], list[list[str]]]:
        """Text → (metadata units, bar units per body line). Stream annotations are added when asked."""
        lines = split_lines(text)
        start = body_start(lines)
        metadata, body = lines[:start], lines[start:]
        if add_stream is None:  # text that already carries its annotations (generated pieces) keeps them
            add_stream = self.stream and not (body and body[0].startswith("[r:"))
        if add_stream and body:
            body = add_stream_annotations(body)
        return metadata, [split_bars(line) for line in body]

    # -- training ---------------------------------------------------------------------------------------------
    def encode_train(self, text: str, rng: random.Random | None = None, cut: bool = True,
                     add_special_patches: bool = True) -> list[list[int]]:
        """Training encoding: BOS, metadata, stream-annotated body, EOS; long pieces cut as the reference does.

        When the piece is longer than `patch_length`, one of three crops is drawn uniformly: the head (truncated,
        EOS lost), the tail (the smallest body-line cut that fits, ends with EOS) or a middle (a random earlier cut,
        truncated). Metadata is always kept and kept lines keep their original `[r:]` numbers.
        """
        rng = rng or random.Random()
        metadata, body = self.split_text(text)
        meta_patches = [p for unit in metadata for p in self.unit_to_patches(unit)]
        line_patches = [[p for unit in line for p in self.unit_to_patches(unit)] for line in body]
        head = [self.bos_patch] if add_special_patches else []
        tail = [self.eos_patch] if add_special_patches else []
        total = len(head) + len(meta_patches) + sum(map(len, line_patches)) + len(tail)
        if total <= self.patch_length or not cut:
            patches = head + meta_patches + [p for line in line_patches for p in line] + tail
            return patches if not cut else patches[:self.patch_length]

        # Smallest line cut whose remainder (plus metadata and specials) fits.
        fixed = len(head) + len(meta_patches) + len(tail)
        remaining = sum(map(len, line_patches))
        tail_cut = 0
        while tail_cut < len(line_patches) and fixed + remaining > self.patch_length:
            remaining -= len(line_patches[tail_cut])
            tail_cut += 1
        # As the reference: only the crops that exist are drawn; a middle cut lies strictly between head and tail.
        choice = rng.choice(("head", "tail", "middle")[:min(tail_cut + 1, 3)])
        if choice == "head":
            cut_at = 0
        elif choice == "tail":
            cut_at = tail_cut
        else:
            cut_at = rng.randint(1, tail_cut - 1)
        patches = head + meta_patches + [p for line in line_patches[cut_at:] for p in line] + tail
        return patches[:self.patch_length]

    # -- generation -------------------------------------------------------------------------------------------
    def encode_generate(self, text: str) -> list[list[int]]:
        """Generation-time encoding of a context that already carries its `[r:]` annotations.

        Only the BOS patch is added; the last unit gets no EOS (nor a newline when the text does not end with one)
        and its trailing partial chunk stays unpadded, so the caller treats it as a forced prefix of the next patch.
        Truncated to `patch_length` patches.
        """
        metadata, body = self.split_text(text, add_stream=False)
        units = metadata + [unit for line in body for unit in line]
        if units and not text.endswith("\n"):  # an unfinished last line gets no newline (as the reference)
            units[-1] = units[-1][:-1]
        patches = [self.bos_patch]
        for index, unit in enumerate(units):
            last = index == len(units) - 1
            patches.extend(self.unit_to_patches(unit, add_eos=not last, pad_last=not last))
        return patches[:self.patch_length]

    # -- decoding ---------------------------------------------------------------------------------------------
    def patch_to_text(self, patch: Sequence[int]) -> str:
        """Characters of one patch up to its first EOS; pad, BOS and EOS ids are dropped."""
        chars = []
        for token in patch:
            if token == EOS_ID:
                break
            if token > EOS_ID:
                chars.append(chr(token))
        return "".join(chars)

    def decode(self, patches: Sequence[Sequence[int]]) -> str:
        """Patches → text (BOS/EOS patches decode to nothing)."""
        return "".join(self.patch_to_text(patch) for patch in patches)


def strip_stream_prefix(line: str) -> str:
    """Remove a leading `[r:i/j]` from one line."""
    return _STREAM_PREFIX.sub("", line, count=1)


def is_eos_patch(patch: Sequence[int]) -> bool:
    """Generation stops at a patch that starts `BOS, EOS` (the EOS patch)."""
    return len(patch) >= 2 and patch[0] == BOS_ID and patch[1] == EOS_ID
