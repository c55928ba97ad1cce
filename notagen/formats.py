"""The one table of what a generated piece is written as, and what a beginning to continue may be.

`notagen generate --formats`, the piece folder writer (`notagen.generation.output`), the renderer
(`notagen.render`), the studio's media types and its page (which reads this table from `/api/formats`) all come from
here: adding a format is one row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from notagen.errors import InputError


@dataclass(frozen=True)
class PieceFile:
    """One kind of file in a piece's folder `<name>/`."""

    key: str
    """Its key in the piece manifest's `files` (and the studio's results)."""
    format: str
    """The `--formats` choice that writes it; "" for the manifest, which is always written."""
    suffix: str
    """What follows the piece's name: `<name>.raw.abc`. Several score pages are `<name>-N.svg` / `.png`."""
    media_type: str
    label: str
    """What the studio's download list calls it ("" when it is not offered as a download)."""
    rendered: bool = False
    """Made from the MusicXML by `notagen.render` (not by the ABC post-processing)."""


_TEXT = "text/plain; charset=utf-8"
PIECE_FILES: tuple[PieceFile, ...] = (
    PieceFile("abc", "abc", ".abc", _TEXT, "ABC"),  # standard ABC, one block per voice
    PieceFile("interleaved_abc", "abc", ".interleaved.abc", _TEXT, "interleaved ABC"),  # one line per bar, all voices
    PieceFile("raw_abc", "abc", ".raw.abc", _TEXT, "raw model text"),  # prompt lines, [r:] annotations, reduced rests
    PieceFile("musicxml", "musicxml", ".musicxml", "application/vnd.recordare.musicxml+xml", "MusicXML"),
    PieceFile("midi", "midi", ".mid", "audio/midi", "MIDI", rendered=True),
    PieceFile("svg", "svg", ".svg", "image/svg+xml", "", rendered=True),
    PieceFile("png", "png", ".png", "image/png", "", rendered=True),
    PieceFile("wav", "wav", ".wav", "audio/wav", "WAV", rendered=True),
    PieceFile("manifest", "", ".json", "application/json", "manifest"),
)
FILES = {entry.key: entry for entry in PIECE_FILES}
OUTPUT_FORMATS: tuple[str, ...] = tuple(dict.fromkeys(entry.format for entry in PIECE_FILES if entry.format))
"""The `--formats` choices, in the order they are listed."""
RENDER_FORMATS: tuple[str, ...] = tuple(dict.fromkeys(entry.format for entry in PIECE_FILES if entry.rendered))

RAW_ABC = FILES["raw_abc"].suffix
"""The model's text as written. `.abc` alone always means standard ABC; DPO sample folders use these names too."""
INTERLEAVED_ABC = FILES["interleaved_abc"].suffix

SCORE_INPUTS: dict[str, str] = {
    ".abc": _TEXT, ".xml": "application/xml", ".musicxml": FILES["musicxml"].media_type,
    ".mxl": "application/vnd.recordare.musicxml", ".mid": "audio/midi", ".midi": "audio/midi",
}
"""File endings of a beginning to continue (ABC, MusicXML, compressed MusicXML, MIDI) and their media types."""

MEDIA_TYPES: dict[str, str] = {**SCORE_INPUTS, **{"." + entry.suffix.rsplit(".", 1)[-1]: entry.media_type
                                                  for entry in PIECE_FILES}}
"""Media type by a file's last extension, for every file a piece folder or a studio job holds."""


def check_formats(formats: list[str] | tuple[str, ...] | None, choices: tuple[str, ...] = OUTPUT_FORMATS
                  ) -> list[str]:
    """The asked formats (None or empty: all the choices); InputError naming any unknown one."""
    if not formats:
        return list(choices)
    unknown = sorted(set(formats) - set(choices))
    if unknown:
        raise InputError(f"unknown --formats {', '.join(unknown)}; choose from {', '.join(choices)}")
    return list(formats)


def describe() -> dict:
    """The table as JSON for the studio's page (`/api/formats`)."""
    return {"formats": list(OUTPUT_FORMATS), "files": [asdict(entry) for entry in PIECE_FILES],
            "inputs": list(SCORE_INPUTS)}


__all__ = ["FILES", "INTERLEAVED_ABC", "MEDIA_TYPES", "OUTPUT_FORMATS", "PIECE_FILES", "PieceFile", "RAW_ABC",
           "RENDER_FORMATS", "SCORE_INPUTS", "check_formats", "describe"]
