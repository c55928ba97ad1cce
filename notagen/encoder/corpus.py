"""Reading pieces for the encoder and the metrics: built datasets, folders of `.abc` files, music21 folk tunes.

A built dataset follows the contract in docs/ARCHITECTURE.md (`index.jsonl` + `pieces/<id>.json`); the text used
is the piece's full interleaved ABC (rest-unreduced, no prompt lines), which is what CLaMP-style scoring sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notagen.abc.text import is_comment_line
from notagen.data.dataset import read_index
from notagen.errors import InputError
from notagen.io import atomic_write_json, atomic_write_text

# Information fields that name or describe a tune rather than its music (and would leak labels).
_METADATA_FIELDS = re.compile(r"^[XTBNZSOAHDFGRCW]:")


@dataclass
class Piece:
    """One piece: its id, ABC text and whatever labels are known."""

    id: str
    text: str
    labels: dict[str, Any] = field(default_factory=dict)
    collection: str = ""
    split: str = "train"


def is_dataset(root: Path) -> bool:
    return (root / "index.jsonl").is_file() and (root / "pieces").is_dir()


def piece_text(piece_json: dict[str, Any], record: dict[str, Any]) -> str:
    """The interleaved text of a built piece (falls back to the original-key training text)."""
    if piece_json.get("interleaved"):
        return piece_json["interleaved"]
    keys = piece_json.get("keys") or {}
    text = keys.get(record.get("key")) or next(iter(keys.values()), None)
    if text is None:
        raise InputError(f"piece {record.get('id')}: no interleaved text")
    return text


def load_dataset(root: str | Path, split: str | None = "train", limit: int | None = None) -> list[Piece]:
    """Pieces of a built dataset (split None = all)."""
    root = Path(root)
    if not is_dataset(root):
        raise InputError(f"{root}: not a built dataset (needs index.jsonl and pieces/)")
    pieces = []
    for record in read_index(root):
        if split is not None and record.get("split", "train") != split:
            continue
        path = root / "pieces" / f"{record['id']}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: unreadable piece ({error})") from None
        pieces.append(Piece(str(record["id"]), piece_text(data, record), dict(record.get("labels") or {}),
                            str(record.get("collection", "")), str(record.get("split", "train"))))
        if limit is not None and len(pieces) >= limit:
            break
    return pieces


def split_tunes(text: str) -> list[str]:
    """The tunes of a multi-tune ABC file (each starting at an `X:` line); the file itself if it has none."""
    starts = [m.start() for m in re.finditer(r"^X:", text, flags=re.M)]
    if not starts:
        return [text] if text.strip() else []
    return [text[a:b].strip() + "\n" for a, b in zip(starts, starts[1:] + [len(text)]) if text[a:b].strip()]


def clean_tune(text: str) -> str:
    """Drop descriptive fields (X:, T:, R:, C:, N:, Z: …), comments and blank lines; keep L:, M:, K:, V:."""
    lines = [line.rstrip() for line in text.splitlines()]
    kept = [line for line in lines if line.strip() and not _METADATA_FIELDS.match(line)
            and not is_comment_line(line)]
    return "\n".join(kept) + "\n"


def tune_field(text: str, name: str) -> str | None:
    match = re.search(rf"^{name}:\s*(.*)$", text, flags=re.M)
    return match.group(1).strip() if match else None


def load_abc_files(paths: Iterable[Path], clean: bool = True) -> list[Piece]:
    pieces = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise InputError(f"{path}: unreadable ({error.strerror})") from None
        tunes = split_tunes(text)
        for n, tune in enumerate(tunes):
            labels = {k: v for k, v in (("rhythm", tune_field(tune, "R")), ("meter", tune_field(tune, "M"))) if v}
            pid = f"{path.stem}#{n + 1}" if len(tunes) > 1 else path.stem
            pieces.append(Piece(pid, clean_tune(tune) if clean else tune, labels, path.parent.name))
    return pieces


def load_pieces(source: str | Path, split: str | None = "train", limit: int | None = None) -> list[Piece]:
    """A built dataset, a folder of `.abc` files (recursively) or one `.abc` file."""
    source = Path(source)
    if is_dataset(source):
        return load_dataset(source, split, limit)
    if source.is_file():
        pieces = load_abc_files([source])
    elif source.is_dir():
        pieces = load_abc_files(sorted(source.rglob("*.abc")))
    else:
        raise InputError(f"{source}: no such dataset, folder or file")
    if not pieces:
        raise InputError(f"{source}: no pieces found")
    return pieces[:limit] if limit is not None else pieces


def music21_tunes(folder: str, limit: int | None = None, rhythm: str | None = None) -> list[Piece]:
    """Real tunes from a music21 corpus ABC folder (e.g. 'ryansMammoth', 'oneills1850'), cleaned of metadata;
    `rhythm` keeps only tunes whose R: field matches (case-insensitive substring)."""
    from music21 import corpus

    paths = sorted(Path(p) for p in corpus.getPaths() if Path(p).parent.name == folder and str(p).endswith(".abc"))
    if not paths:
        raise InputError(f"music21 corpus folder {folder!r} has no .abc files")
    pieces = []
    for piece in load_abc_files(paths):
        if rhythm is not None and rhythm.lower() not in piece.labels.get("rhythm", "").lower():
            continue
        if "K:" not in piece.text or piece.text.count("|") < 4:
            continue
        pieces.append(piece)
        if limit is not None and len(pieces) >= limit:
            break
    return pieces


def write_dataset(root: str | Path, pieces: Iterable[Piece]) -> Path:
    """Write pieces in the dataset-folder contract (index + pieces/*.json): for tests and quick experiments."""
    root = Path(root)
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    lines = []
    for piece in pieces:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", piece.id)
        atomic_write_json(root / "pieces" / f"{safe}.json",
                          {"standard": piece.text, "interleaved": piece.text, "keys": {}}, indent=None)
        record = {"id": safe, "source": piece.id, "collection": piece.collection, "labels": piece.labels or None,
                  "split": piece.split, "chars": len(piece.text)}
        lines.append(json.dumps(record) + "\n")
    atomic_write_text(root / "index.jsonl", "".join(lines))  # after the pieces: an index names only written files
    atomic_write_json(root / "manifest.json", {"written_by": "notagen.encoder.corpus"}, indent=None)
    return root
