"""The reader of a built dataset folder (see docs/ARCHITECTURE.md "Dataset folder") and the key policies."""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from notagen.abc.text import prompt_block
from notagen.abc.transpose import KEYS, key_to_pitch_class, mode_to_key_signature
from notagen.errors import InputError
from notagen.io import read_jsonl

Stage = Literal["pretrain", "finetune", "original"]

# Fine-tuning key draw: pitch-class offset -3..+3 around the original key
# signature, weights 1,2,3,4,3,2,1 (/16); enharmonic pitch classes choose a spelling with fixed odds.
FINETUNE_OFFSETS = (-3, -2, -1, 0, 1, 2, 3)
FINETUNE_WEIGHTS = (1, 2, 3, 4, 3, 2, 1)
PITCH_CLASS_SPELLINGS: dict[int, tuple[tuple[str, ...], tuple[float, ...]]] = {
    0: (("C",), (1.0,)), 1: (("Db", "C#"), (0.8, 0.2)), 2: (("D",), (1.0,)), 3: (("Eb",), (1.0,)),
    4: (("E",), (1.0,)), 5: (("F",), (1.0,)), 6: (("F#", "Gb"), (0.5, 0.5)), 7: (("G",), (1.0,)),
    8: (("Ab",), (1.0,)), 9: (("A",), (1.0,)), 10: (("Bb",), (1.0,)), 11: (("B", "Cb"), (0.8, 0.2)),
}


def original_key_name(record: dict[str, Any]) -> str:
    """The one of the 15 keys whose signature the piece is written in (its `K:` mode mapped to a key signature)."""
    signature = mode_to_key_signature(str(record.get("key") or "C"))
    if signature in KEYS:
        return signature
    # An unusual spelling of a signature (e.g. "A#"): the 15-key spelling of the same pitch class.
    pitch_class = key_to_pitch_class(signature)
    return PITCH_CLASS_SPELLINGS[pitch_class][0][0]


def draw_key(record: dict[str, Any], stage: Stage, rng: random.Random) -> str:
    """The key to train a piece in: `pretrain` uniform over the 15 keys, `finetune` peaked around the original
    key signature (reference rule), `original` the piece's own key signature."""
    if stage == "pretrain":
        return rng.choice(KEYS)
    original = original_key_name(record)
    if stage == "original":
        return original
    if stage != "finetune":
        raise ValueError(f"unknown key-draw stage {stage!r} (pretrain, finetune or original)")
    offset = rng.choices(FINETUNE_OFFSETS, weights=FINETUNE_WEIGHTS)[0]
    spellings, weights = PITCH_CLASS_SPELLINGS[(key_to_pitch_class(original) + offset) % 12]
    return spellings[0] if len(spellings) == 1 else rng.choices(spellings, weights=weights)[0]


def read_index(root: str | Path) -> list[dict[str, Any]]:
    """All records of a dataset folder's index.jsonl, in file order."""
    index = Path(root) / "index.jsonl"
    if not index.is_file():
        raise InputError(f"not a dataset folder (no index.jsonl): {root}")
    return read_jsonl(index, strict=True)


class ScoreDataset:
    """The pieces of one split of a dataset folder, and each piece's training text in any of the 15 keys.

    Args:
        root: the dataset folder written by `notagen data build`.
        split: "train", "eval" or "all".
        labelled_only: keep only pieces with (period, composer, instrumentation) labels (fine-tuning).
        cache_size: piece files kept in memory (the trainer reads the same pieces every epoch).
    """

    def __init__(self, root: str | Path, split: str = "train", labelled_only: bool = False,
                 cache_size: int = 256) -> None:
        if split not in ("train", "eval", "all"):
            raise InputError(f"unknown split {split!r}: expected train, eval or all")
        self.root = Path(root)
        self.split = split
        self.records = [
            r for r in read_index(self.root)
            if (split == "all" or r.get("split") == split) and (not labelled_only or r.get("labels"))
        ]
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.records)

    def piece(self, i: int) -> dict[str, Any]:
        """The piece file of record i: {"standard", "interleaved", "keys": {KEY: text}}."""
        piece_id = self.records[i]["id"]
        if piece_id in self._cache:
            self._cache.move_to_end(piece_id)
            return self._cache[piece_id]
        path = self.root / "pieces" / f"{piece_id}.json"
        try:
            piece = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read piece file {path}: {error}") from error
        self._cache[piece_id] = piece
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return piece

    def text(self, i: int, key: str | None = None, prompt: bool = False) -> str:
        """Training text of piece i (rest-reduced, interleaved, no prompt lines) in `key` (None: the original
        key signature), with the prompt block before it when `prompt` is true and the piece is labelled."""
        record = self.records[i]
        wanted = original_key_name(record) if key is None else key
        keys = self.piece(i).get("keys") or {}
        if wanted not in keys:
            raise InputError(f"piece {record['id']} has no text in key {wanted!r} (keys: {', '.join(keys)})")
        text = keys[wanted]
        labels = record.get("labels")
        if prompt and labels:
            text = prompt_block(labels["period"], labels["composer"], labels["instrumentation"]) + text
        return text
