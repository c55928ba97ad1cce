"""The context of a continuation: a given score (ABC, MusicXML, or MIDI quantised by music21) as the text the model
goes on from.

The score becomes rest-reduced interleaved ABC, and its k body lines are numbered `[r:i/(k-1-i+R)]`: line i of the
k given ones, with R lines still to come, where R = the bar limit when there is one, else k (the model is told the
piece goes on about as long again; it then writes its own counters and may end earlier or later).

Only what the model can see is kept: with `max_lines` (the studio and `notagen generate` pass the model's
`patch_length`, since every body line takes at least one patch) the context holds the last `max_lines` lines, still
numbered as in the whole score. `continuation_context` runs the conversion in a worker process bounded by
`notagen.limits` (a user's score is never parsed in the caller's process).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from notagen.abc.interleave import interleave
from notagen.abc.text import split_header_body, strip_prompt_lines, strip_stream_annotations
from notagen.errors import ConversionError, InputError
from notagen.limits import Limits, run_limited
from notagen.prompt import Prompt, prompt_context


def continuation_text(path: Path, remaining: int | None = None, max_lines: int | None = None) -> str:
    """A score file → rest-reduced interleaved ABC whose body lines carry `[r:i/j]`, the last `max_lines` of them
    at most (see the module docstring). Runs in the current process; see `continuation_context`."""
    from notagen.convert import detect_format, score_to_abc

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if detect_format(path) == "midi":
        standard = _midi_to_abc(path)
    else:
        standard = score_to_abc(path)
    try:
        reduced = interleave(standard, reduce_rests=True)
    except (ValueError, IndexError, KeyError) as error:
        raise ConversionError(f"{path}: cannot interleave the voices ({error})") from error
    header, body = split_header_body(strip_stream_annotations(strip_prompt_lines(reduced)))
    header = [line for line in header if not line.startswith("X:")]
    if not body:
        raise InputError(f"{path}: no music to continue")
    count = len(body)
    rest = count if remaining is None else remaining
    first = 0 if max_lines is None else max(0, count - max_lines)
    lines = [f"[r:{i}/{count - 1 - i + rest}]{body[i]}" for i in range(first, count)]
    return "".join(line + "\n" for line in header + lines)


def continuation_context(path: Path, remaining: int | None = None, max_lines: int | None = None,
                         limits: Limits | None = None) -> str:
    """`continuation_text` in a worker process bounded by `limits` (LimitError naming the limit when one is hit)."""
    return run_limited(continuation_text, Path(path), remaining=remaining, max_lines=max_lines, limits=limits,
                       name=str(path))


def _midi_to_abc(path: Path) -> str:
    from music21 import converter
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    from notagen.convert import score_to_abc

    try:
        score = converter.parse(str(path), format="midi", quantizePost=True)
        xml = GeneralObjectExporter(score).parse()
    except Exception as error:  # music21 raises many unrelated types on odd MIDI files
        raise ConversionError(f"{path}: music21 cannot read the MIDI file ({type(error).__name__}: {error})") \
            from error
    with tempfile.TemporaryDirectory(prefix="notagen-midi-") as tmp:
        xml_path = Path(tmp) / (path.stem + ".musicxml")
        xml_path.write_bytes(xml)
        return score_to_abc(xml_path)


def with_prompt(prompt: Prompt | None, text: str) -> str:
    """Prompt lines first, then the text without its own prompt lines."""
    return prompt_context(prompt) + strip_prompt_lines(text)


__all__ = ["continuation_text", "continuation_context", "with_prompt"]
