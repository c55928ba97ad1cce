"""Validity report of a piece of ABC: does abc2xml read it, do the voices have the same bars, do bars line up.

Generation and evaluation call `check_abc` on every generated piece, so it stays cheap: one in-process abc2xml run
plus our own text-level bar parser (about 0.1 s for a chorale).
"""

from __future__ import annotations

import json as json_module
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from notagen.abc.interleave import is_interleaved, is_rest_reduced, parse_any
from notagen.abc.text import strip_prompt_lines, strip_stream_annotations
from notagen.errors import ConversionError, InputError


@dataclass
class ValidityReport:
    """What `check_abc` found. Durations are in quarter notes (None: the bar could not be measured)."""

    parses: bool                      # abc2xml turned the text into MusicXML
    error: str | None                 # why not (abc2xml's message), or None
    voices: int
    bars_per_voice: dict[str, int]
    bar_durations: dict[str, list[Fraction | None]]
    misaligned_bars: int              # bar indices where the voices' durations differ (or cannot be measured)
    bars: int                         # the largest number of bars of any voice
    bae: float                        # misaligned_bars / bars (bar alignment error)
    valid: bool                       # parses, same number of bars in every voice, no misaligned bar
    interleaved: bool = False
    rest_reduced: bool = False
    misaligned: list[int] = field(default_factory=list)  # the misaligned bar indices (0-based)

    def to_dict(self) -> dict:
        """JSON-friendly form (durations as strings like `3/2`)."""
        data = asdict(self)
        data["bar_durations"] = {vid: [None if d is None else str(d) for d in durations]
                                 for vid, durations in self.bar_durations.items()}
        return data


def check_abc(text: str) -> ValidityReport:
    """Check standard or interleaved ABC (with or without `[r:]`/prompt lines; rest-reduced text is unreduced)."""
    from notagen.convert import abc_to_musicxml

    body_text = strip_stream_annotations(strip_prompt_lines(text))
    interleaved = is_interleaved(body_text)
    reduced = interleaved and is_rest_reduced(body_text)
    error: str | None = None
    try:
        abc_to_musicxml(text)
        parses = True
    except ConversionError as failure:
        parses, error = False, str(failure)
    try:
        parsed = parse_any(body_text)
    except (ValueError, IndexError, ZeroDivisionError, ConversionError) as failure:
        return ValidityReport(False, error or f"cannot split the music into bars: {failure}", 0, {}, {}, 0, 0,
                              0.0, False, interleaved, reduced)
    counts = parsed.bar_counts()
    durations = {vid: [None if d is None else d * 4 for d in values]
                 for vid, values in parsed.bar_durations().items()}
    bars = max(counts.values(), default=0)
    misaligned = []
    for index in range(bars):
        values = [durations[vid][index] for vid in durations if index < len(durations[vid])]
        if any(value is None for value in values) or len(set(values)) > 1:
            misaligned.append(index)
    equal_counts = len(set(counts.values())) <= 1
    has_key = any(line.startswith("K:") for line in parsed.header)
    if parses and not counts:
        error = "no music found"
    elif parses and not has_key:
        error = "no K: field in the header (not an ABC tune)"
    valid = parses and has_key and bool(counts) and equal_counts and not misaligned
    return ValidityReport(
        parses=parses, error=error, voices=len(counts), bars_per_voice=counts, bar_durations=durations,
        misaligned_bars=len(misaligned), bars=bars, bae=len(misaligned) / bars if bars else 0.0, valid=valid,
        interleaved=interleaved, rest_reduced=reduced, misaligned=misaligned,
    )


def format_report(name: str, report: ValidityReport) -> str:
    """A readable multi-line report."""
    lines = [f"{name}: {'valid' if report.valid else 'INVALID'}",
             f"  abc2xml: {'reads it' if report.parses else 'fails: ' + (report.error or '?')}"]
    if report.parses and report.error:
        lines.append(f"  problem: {report.error}")
    form = "interleaved" + (" (rest-reduced)" if report.rest_reduced else "") if report.interleaved else "standard"
    lines.append(f"  form: {form} ABC, {report.voices} voice(s)")
    counts = ", ".join(f"V:{vid} {count}" for vid, count in report.bars_per_voice.items())
    if len(set(report.bars_per_voice.values())) > 1:
        lines.append(f"  bars per voice DIFFER: {counts}")
    else:
        lines.append(f"  bars: {report.bars} in every voice")
    lines.append(f"  misaligned bars: {report.misaligned_bars} (BAE {report.bae:.3f})")
    for index in report.misaligned[:5]:
        detail = ", ".join(
            f"V:{vid} {values[index] if values[index] is not None else '?'}"
            for vid, values in report.bar_durations.items() if index < len(values))
        lines.append(f"    bar {index + 1}: {detail} quarter notes")
    if len(report.misaligned) > 5:
        lines.append(f"    … and {len(report.misaligned) - 5} more")
    return "\n".join(lines)


def check_command(file: Path, json: bool = False) -> int:
    """Check that an ABC file is valid: abc2xml reads it and every voice has the same bars with equal durations.

    Accepts standard or interleaved ABC, also generated text with [r:] annotations, prompt lines and omitted
    whole-rest voices. Exits with status 1 when the piece is invalid.

    Args:
        file: The ABC file to check.
        json: Print the report as JSON instead of text.

    Examples:
        notagen check generated.abc
        notagen check piece.abc --json
    """
    path = Path(file)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason})") from error
    except OSError as error:
        raise InputError(f"{path}: unreadable: {error.strerror or error}") from error
    if "\x00" in text:
        raise InputError(f"{path}: binary file, not ABC")
    report = check_abc(text)
    if json:
        print(json_module.dumps({"file": str(path), **report.to_dict()}, indent=2))
    else:
        print(format_report(str(path), report))
    return 0 if report.valid else 1
