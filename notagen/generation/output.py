"""A generated piece on disk: its folder `<name>/` with one file per kind in `notagen.formats`, and its manifest.

`notagen generate` and the studio write pieces with the same functions, so their folders are alike.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from notagen.errors import ConversionError
from notagen.formats import FILES, RENDER_FORMATS
from notagen.io import atomic_directory, atomic_write_json, atomic_write_text, content_hash


def model_summary(loaded: Any, device: Any) -> dict:
    """What a manifest says about the model that wrote a piece."""
    return {"source": loaded.info.get("source"), "format": loaded.info.get("format"),
            "parameters": loaded.info.get("parameters"), "dtype": loaded.info.get("dtype"),
            "precision": loaded.info.get("precision"), "weight_bytes": loaded.info.get("weight_bytes"),
            "config": loaded.config.to_dict(), "device": str(device)}


def piece_name(index: int, result: Any) -> str:
    """Folder and file stem of the index-th piece: its number and the seed that wrote it."""
    return f"piece-{index + 1:03d}-seed{result.attempts[-1].seed}"


def piece_manifest(name: str, result: Any, requested_seed: int, sampling: Any, limits: Any, model_info: dict,
                   **extra: Any) -> dict:
    """The JSON manifest of one piece (prompt, seeds, sampling, limits, model, timings, validity, attempts).

    `extra` adds caller fields (prompt, continue_from, job) in front of the common ones.
    """
    piece = result.piece
    return {
        "name": name, **extra, "seed": result.attempts[-1].seed, "requested_seed": requested_seed,
        "sampling": sampling.to_dict(), "limits": asdict(limits), "model": model_info,
        "stop_reason": piece.stop_reason, "bars": piece.bars, "patches": piece.patches,
        "rewindows": piece.rewindows, "chars": len(piece.generated),
        "timings": {"generate_seconds": round(piece.seconds, 3),
                    "chars_per_second": round(piece.chars_per_second, 1),
                    "all_attempts_seconds": round(sum(a.seconds for a in result.attempts), 3)},
        "valid": result.finished.valid, "error": result.finished.error,
        "validity": result.finished.validity, "retries": result.retries,
        "attempts": [attempt.to_dict() for attempt in result.attempts],
        "hash": content_hash(result.finished.raw),
    }


def write_piece(directory: Path, name: str, result: Any, formats: list[str], manifest: dict) -> dict:
    """Write one piece's folder `directory/name/` and return its manifest (with the file list).

    The folder is built beside its place and moved there at the end (`atomic_directory`), so it exists complete
    or not at all (an older folder of the same name is replaced).
    """
    from notagen.render import render_score

    finished = result.finished
    files: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    with atomic_directory(directory / name) as folder:
        def write(key: str, text: str) -> None:
            files[key] = [atomic_write_text(folder / f"{name}{FILES[key].suffix}", text)]

        if "abc" in formats:
            write("raw_abc", finished.raw)
            if finished.interleaved:
                write("interleaved_abc", finished.interleaved)
            if finished.standard:
                write("abc", finished.standard)
        render_formats = [fmt for fmt in RENDER_FORMATS if fmt in formats]
        if finished.musicxml is None:
            for fmt in ["musicxml", *render_formats]:
                if fmt in formats:
                    skipped[fmt] = f"no MusicXML: {finished.error or 'the ABC does not convert'}"
        else:
            if "musicxml" in formats:
                write("musicxml", finished.musicxml)
            if render_formats and not manifest["valid"]:
                # An invalid piece is a stopped or broken one; its bars can be absurdly long, and engraving or
                # synthesising them can take minutes for nothing a musician could use.
                skipped.update({fmt: "not rendered: the piece is not valid" for fmt in render_formats})
            elif render_formats:
                try:
                    rendered = render_score(finished.musicxml, folder, name, render_formats)
                except ConversionError as error:
                    skipped.update({fmt: str(error) for fmt in render_formats})
                else:
                    files.update(rendered.files)
                    skipped.update(rendered.skipped)
                    manifest["midi_programs"] = rendered.programs
        manifest["timings"]["render_seconds"] = round(time.perf_counter() - started, 3)
        manifest["files"] = {key: [f"{name}/{path.name}" for path in paths] for key, paths in files.items()}
        manifest["skipped"] = skipped
        atomic_write_json(folder / f"{name}{FILES['manifest'].suffix}", manifest)
    return manifest


__all__ = ["model_summary", "piece_manifest", "piece_name", "write_piece"]
