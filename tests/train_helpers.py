"""Test helpers for the training tests: a small dataset folder built from the ABC fixtures (not collected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from notagen.abc.interleave import deinterleave, interleave
from notagen.abc.text import original_key, strip_prompt_lines
from notagen.abc.transpose import KEYS, transpose
from notagen.io import content_hash

FIXTURES = Path(__file__).parent / "fixtures"
BACH_CHORALE = {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}
# (fixture, split, labels when the file has no prompt lines): two Bach chorales (labelled), two fiddle tunes.
PIECES = (
    ("model_bwv269.abc", "train", None),
    ("model_aird_ranting_highlandman.abc", "train", None),
    ("model_aird_todlen_hame.abc", "train", None),
    ("model_bwv40_3.abc", "eval", BACH_CHORALE),
)


def _labels(text: str) -> dict[str, str] | None:
    lines = text.splitlines()
    if len(lines) >= 4 and lines[3] == "%end" and all(ln.startswith("%") and not ln.startswith("%%")
                                                         for ln in lines[:3]):
        return {"period": lines[0][1:], "composer": lines[1][1:], "instrumentation": lines[2][1:]}
    return None


def make_dataset(root: Path, pieces: tuple[tuple[str, str, dict | None], ...] = PIECES) -> Path:
    """Write DATASET/index.jsonl and pieces/<id>.json (docs/ARCHITECTURE.md layout) for `pieces`."""
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for name, split, labels in pieces:
        source = (FIXTURES / name).read_text(encoding="utf-8")
        interleaved = strip_prompt_lines(source)
        standard = deinterleave(interleaved)
        keys = {key: interleave(transpose(standard, key), reduce_rests=True) for key in KEYS}
        piece_id = Path(name).stem
        (root / "pieces" / f"{piece_id}.json").write_text(
            json.dumps({"standard": standard, "interleaved": interleaved, "keys": keys}), encoding="utf-8")
        records.append({
            "id": piece_id, "source": str(FIXTURES / name), "collection": "fixtures", "licence": "public domain",
            "labels": _labels(source) or labels, "key": original_key(standard), "bars": interleaved.count("\n"),
            "voices": sum(line.startswith("V:") for line in interleaved.splitlines()),
            "chars": len(interleaved), "split": split, "hash": content_hash(source),
        })
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return root
