"""Strict validity of a piece of ABC: what it takes for abc2midi, abcm2ps, music21 and MIDI readers to accept it.

A piece is **valid** when all of these hold (each failure names the rule, the bar and the voice):

* `parse`: abc2xml turns it into MusicXML, and the header has a `K:` field.
* `token`: the music is well formed: only ABC tokens (`notagen.abc.lexer`), known decorations, no voice overlays.
* `tie`: every tie joins a note to the next note of the same pitch (no doubled ties, no tie to a rest, none left
  open at the end); `slur`: slurs open before they close and all are closed at the end; `tuplet`, `grace`,
  `rhythm`, `chord`: tuplets get their notes within the bar, grace groups lead to a note, broken rhythm joins two
  notes, a chord's notes have one length.
* `duration`: every note has a length one note head can show (abcm2ps refuses `C5`), and every bar of every voice
  lasts exactly the active meter, except a shorter first bar (a pickup), a last bar that lasts the meter or
  completes the pickup, and bars after an explicit `[M:]` change (which then hold for the new meter).
* `bars`: every voice has the same number of bars, and the voices of a bar last equally long.
* `key`: keys have at most 7 sharps or flats, and key and meter changes happen in all voices in the same bar.
* `repeat`: barlines, repeats and endings are the same in every voice.
* `range`: every note lies in its part's range (by part name and clef, `notagen.instruments`, with a margin of
  2 semitones) and never outside the piano (A0-C8).

`check_abc(text, strict=False)` applies only the older alignment rules (`parse`, `bars`), as the bar-alignment
error (BAE) metric needs. Generation, the studio, DPO and `notagen eval` call the strict check on every piece.
"""

from __future__ import annotations

import json as json_module
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from notagen.abc.interleave import is_interleaved, is_rest_reduced, parse_any, score_voice_groups
from notagen.abc.lexer import LexError, field_parts, tokenize
from notagen.abc.music import (
    MAX_FIFTHS,
    MAX_STAFF_VOICES,
    MusicError,
    VoiceReader,
    meter_length,
    parse_key,
    unit_length,
)
from notagen.abc.text import first_field, strip_prompt_lines, strip_stream_annotations
from notagen.errors import ConversionError, InputError
from notagen.instruments import octave_shift, voice_instruments

RULES = ("parse", "token", "tie", "slur", "tuplet", "grace", "rhythm", "chord", "duration", "bars", "key", "meter",
         "repeat", "range", "structure")
MAX_LISTED = 50


@dataclass(frozen=True)
class Failure:
    """One broken rule: where (1-based bar number, voice id) and what."""

    rule: str
    message: str
    bar: int | None = None
    voice: str | None = None

    def __str__(self) -> str:
        where = ", ".join(part for part in (f"bar {self.bar}" if self.bar else "",
                                            f"V:{self.voice}" if self.voice else "") if part)
        return f"{where + ': ' if where else ''}{self.rule}: {self.message}"


@dataclass
class ValidityReport:
    """What `check_abc` found. Durations are in quarter notes (None: the bar could not be measured)."""

    parses: bool                      # abc2xml turned the text into MusicXML
    error: str | None                 # the first failure, in one line, or None
    voices: int
    bars_per_voice: dict[str, int]
    bar_durations: dict[str, list[Fraction | None]]
    misaligned_bars: int              # bar indices where the voices' durations differ (or cannot be measured)
    bars: int                         # the largest number of bars of any voice
    bae: float                        # misaligned_bars / bars (bar alignment error)
    valid: bool                       # no failure (strict: every rule above; lenient: parse and bars only)
    interleaved: bool = False
    rest_reduced: bool = False
    misaligned: list[int] = field(default_factory=list)  # the misaligned bar indices (0-based)
    failures: list[Failure] = field(default_factory=list)
    """The first MAX_LISTED failures, in bar order."""
    failure_counts: dict[str, int] = field(default_factory=dict)
    """Failures per rule (all of them)."""
    strict: bool = True

    def to_dict(self) -> dict:
        """JSON-friendly form (durations as strings like `3/2`, failures as strings)."""
        data = asdict(self)
        data["bar_durations"] = {vid: [None if d is None else str(d) for d in durations]
                                 for vid, durations in self.bar_durations.items()}
        data["failures"] = [str(failure) for failure in self.failures]
        return data


def _parse_failure(text: str) -> str | None:
    from notagen.convert import abc_to_musicxml

    try:
        abc_to_musicxml(text)
    except ConversionError as failure:
        return str(failure)
    return None


_UNCHECKED = object()


def check_abc(text: str, strict: bool = True, abc2xml_error: str | None | object = _UNCHECKED) -> ValidityReport:
    """Check standard or interleaved ABC (with or without `[r:]`/prompt lines; rest-reduced text is unreduced).

    A caller that has already converted the text with abc2xml passes its error (None: it converted) as
    `abc2xml_error`, so that it is not converted twice.
    """
    body_text = strip_stream_annotations(strip_prompt_lines(text))
    interleaved = is_interleaved(body_text)
    reduced = interleaved and is_rest_reduced(body_text)
    failures: list[Failure] = []
    parse_error = _parse_failure(text) if abc2xml_error is _UNCHECKED else abc2xml_error
    if parse_error is not None:
        failures.append(Failure("parse", f"abc2xml fails: {parse_error}"))
    try:
        parsed = parse_any(body_text)
    except (ValueError, IndexError, ZeroDivisionError, ConversionError) as failure:
        failures.append(Failure("structure", f"cannot split the music into bars: {failure}"))
        return _report(failures, parse_error is None, {}, {}, interleaved, reduced, strict)
    counts = parsed.bar_counts()
    if not any(line.startswith("K:") for line in parsed.header):
        failures.append(Failure("parse", "no K: field in the header (not an ABC tune)"))
    if not counts:
        failures.append(Failure("parse", "no music found"))
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"V:{vid} {count}" for vid, count in counts.items())
        failures.append(Failure("bars", f"voices have different numbers of bars ({detail})"))
    durations = _read_voices(parsed, failures if strict else [])
    misaligned = _misaligned(durations, max(counts.values(), default=0))
    for index in misaligned[:MAX_LISTED]:
        detail = ", ".join(f"V:{vid} {_quarters(values[index])}" for vid, values in durations.items()
                           if index < len(values))
        failures.append(Failure("bars", f"voices last differently ({detail} quarter notes)", index + 1))
    if strict:
        _check_barlines(parsed, failures)
        for group in score_voice_groups(parsed.header):
            if len(group) > MAX_STAFF_VOICES:
                failures.append(Failure("structure", f"one staff holds {len(group)} voices ({' '.join(group)}); "
                                                     f"abcm2ps draws at most {MAX_STAFF_VOICES}"))
    quarters = {vid: [None if d is None else d * 4 for d in values] for vid, values in durations.items()}
    return _report(failures, parse_error is None, counts, quarters, interleaved, reduced, strict, misaligned)


def _quarters(value: Fraction | None) -> str:
    return "?" if value is None else str(value * 4)


def _report(failures: list[Failure], parses: bool, counts: dict[str, int],
            durations: dict[str, list[Fraction | None]], interleaved: bool, reduced: bool, strict: bool,
            misaligned: list[int] | None = None) -> ValidityReport:
    if not strict:
        failures = [f for f in failures if f.rule in ("parse", "bars", "structure")]
    failures.sort(key=lambda f: (f.bar or 0, f.voice or "", RULES.index(f.rule) if f.rule in RULES else 99))
    misaligned = misaligned or []
    bars = max(counts.values(), default=0)
    return ValidityReport(
        parses=parses, error=str(failures[0]) if failures else None, voices=len(counts), bars_per_voice=counts,
        bar_durations=durations, misaligned_bars=len(misaligned), bars=bars,
        bae=len(misaligned) / bars if bars else 0.0, valid=not failures, interleaved=interleaved,
        rest_reduced=reduced, misaligned=misaligned, failures=failures[:MAX_LISTED],
        failure_counts=dict(Counter(f.rule for f in failures)), strict=strict)


def _misaligned(durations: dict[str, list[Fraction | None]], bars: int) -> list[int]:
    misaligned = []
    for index in range(bars):
        values = [durations[vid][index] for vid in durations if index < len(durations[vid])]
        if any(value is None for value in values) or len(set(values)) > 1:
            misaligned.append(index)
    return misaligned


def _read_voices(parsed, failures: list[Failure]) -> dict[str, list[Fraction | None]]:
    """Read every voice bar by bar with a VoiceReader: durations per bar; every broken rule into `failures`."""
    header = parsed.header
    unit = unit_length(first_field(header, "L"))
    meter_text = first_field(header, "M")
    meter = meter_length(meter_text)
    key_text = first_field(header, "K")
    key_map: dict[str, int] = {}
    key_fifths: int | None = None
    if key_text is not None:
        try:
            key = parse_key(key_text)
        except MusicError as error:
            failures.append(Failure("key", str(error)))
        else:
            if key.fifths is not None and abs(key.fifths) > MAX_FIFTHS:
                failures.append(Failure("key", f"key {key_text!r} has {abs(key.fifths)} sharps or flats"))
            key_map, key_fifths = key.accidentals(), key.fifths
    if meter_text is not None and meter is None and meter_text.strip().lower() != "none":
        failures.append(Failure("meter", f"unreadable meter {meter_text!r}"))
    instruments = voice_instruments(header)
    definitions = {line.split()[0][2:]: line for line in header if line.startswith("V:") and line.split()[0][2:]}
    durations: dict[str, list[Fraction | None]] = {}
    changes: dict[int, dict[str, set[str]]] = {}  # bar → voice → inline K:/M: changes there
    for vid, voice in parsed.voices.items():
        low, high = instruments[vid].bounds() if vid in instruments else (21, 108)
        reader = VoiceReader(unit=unit, meter=meter, key=dict(key_map), key_fifths=key_fifths, low=low, high=high,
                             shift=octave_shift(definitions.get(vid, "")))
        values: list[Fraction | None] = []
        meters: list[Fraction | None] = []
        for index, bar in enumerate(voice.bars):
            text = (voice.prefix + " " + bar) if index == 0 else bar
            reader.begin_bar()
            measurable = True
            try:
                tokens = tokenize(text)
            except LexError as error:
                failures.append(Failure("token", f"{error} in {text.strip()[:60]!r}", index + 1, vid))
                values.append(None)
                meters.append(reader.meter)
                continue
            for token in tokens:
                if token.kind == "field" and token.text[1] in "KM":
                    _note_change(changes, index, vid, token.text, reader)
                problem = reader.read(token)
                if problem is not None:
                    failures.append(Failure(problem[0], problem[1], index + 1, vid))
                    measurable = measurable and problem[0] not in ("rhythm", "tuplet", "meter", "token")
            still_open = reader.open_problem()
            if still_open:
                failures.append(Failure(_open_rule(still_open), still_open, index + 1, vid))
                measurable = False
            values.append(reader.elapsed if measurable else None)
            meters.append(reader.meter)
        if reader.tie is not None:
            failures.append(Failure("tie", f"tie from {reader.tie_text} never reaches a note", len(voice.bars), vid))
        if reader.slurs:
            failures.append(Failure("slur", f"{reader.slurs} slur(s) never closed", len(voice.bars), vid))
        _check_bar_lengths(vid, values, meters, failures)
        durations[vid] = values
    voices = list(parsed.voices)
    for index, by_voice in sorted(changes.items()):
        seen = {vid: frozenset(by_voice.get(vid, ())) for vid in voices if index < len(parsed.voices[vid].bars)}
        if len(set(seen.values())) > 1:
            detail = "; ".join(f"V:{vid} {' '.join(sorted(found)) or 'none'}" for vid, found in seen.items())
            failures.append(Failure("key", f"key or meter changes differ between voices ({detail})", index + 1))
    return durations


def _note_change(changes: dict[int, dict[str, set[str]]], index: int, vid: str, text: str,
                 reader: VoiceReader) -> None:
    """Record an inline key or meter change (read before `reader` reads the field); restatements are no change."""
    name, value = field_parts(text)
    if name == "K":
        try:
            key = parse_key(value)
        except MusicError:
            return
        if not key.sets_key or key.fifths == reader.key_fifths:
            return  # a clef change (`[K:treble]`) belongs to one staff; `[K:C]` under `K:Am` changes nothing
        value = key.name
    elif meter_length(value) == reader.meter:
        return
    changes.setdefault(index, {}).setdefault(vid, set()).add(f"[{name}:{value}]")


def _open_rule(message: str) -> str:
    return "tuplet" if "tuplet" in message else "grace" if "grace" in message else "rhythm"


def _check_bar_lengths(vid: str, values: list[Fraction | None], meters: list[Fraction | None],
                       failures: list[Failure]) -> None:
    """Every bar lasts its meter, except a pickup first bar and a last bar that completes it."""
    if not values:
        return
    pickup = values[0] if values[0] is not None and meters[0] is not None and 0 < values[0] < meters[0] else None
    last = len(values) - 1
    for index, (value, meter) in enumerate(zip(values, meters)):
        if value is None or meter is None or value == meter:
            continue
        if index == 0 and pickup is not None and last > 0:
            continue
        if index == last and last > 0 and pickup is not None and value == meter - pickup:
            continue
        failures.append(Failure("duration", f"bar lasts {value * 4} quarter notes, the meter {meter * 4}",
                                index + 1, vid))


def _check_barlines(parsed, failures: list[Failure]) -> None:
    voices = list(parsed.voices.values())
    if len(voices) < 2:
        return
    first = voices[0]
    for voice in voices[1:]:
        if " ".join(voice.left_barline.split()) != " ".join(first.left_barline.split()):
            failures.append(Failure("repeat", f"starts with {voice.left_barline or 'no barline'!r}, V:{first.id} "
                                              f"with {first.left_barline or 'no barline'!r}", 1, voice.id))
        for index, (mine, theirs) in enumerate(zip(voice.right_barlines, first.right_barlines)):
            if "".join(mine.split()) != "".join(theirs.split()):
                failures.append(Failure("repeat", f"ends with {mine!r}, V:{first.id} with {theirs!r}", index + 1,
                                        voice.id))


def format_report(name: str, report: ValidityReport) -> str:
    """A readable multi-line report."""
    mode = "" if report.strict else " (alignment only)"
    lines = [f"{name}: {'valid' if report.valid else 'INVALID'}{mode}",
             f"  abc2xml: {'reads it' if report.parses else 'fails'}"]
    form = "interleaved" + (" (rest-reduced)" if report.rest_reduced else "") if report.interleaved else "standard"
    lines.append(f"  form: {form} ABC, {report.voices} voice(s)")
    counts = ", ".join(f"V:{vid} {count}" for vid, count in report.bars_per_voice.items())
    if len(set(report.bars_per_voice.values())) > 1:
        lines.append(f"  bars per voice DIFFER: {counts}")
    else:
        lines.append(f"  bars: {report.bars} in every voice")
    lines.append(f"  misaligned bars: {report.misaligned_bars} (BAE {report.bae:.3f})")
    if report.failure_counts:
        summary = ", ".join(f"{rule} {count}" for rule, count in sorted(report.failure_counts.items()))
        lines.append(f"  failures: {sum(report.failure_counts.values())} ({summary})")
        for failure in report.failures[:10]:
            lines.append(f"    {failure}")
        if sum(report.failure_counts.values()) > 10:
            lines.append(f"    … and {sum(report.failure_counts.values()) - 10} more")
    return "\n".join(lines)


def judge_text(text: str):
    """Ask the outside judges (`notagen.judges`) about ABC text as `check_abc` reads it: prompt lines and `[r:]`
    stripped, omitted voices restored; music21 and mido get its MusicXML and MIDI when it converts."""
    from notagen.abc.interleave import rest_unreduce
    from notagen.convert import abc_to_musicxml
    from notagen.judges import judge_abc
    from notagen.render import render_midi, set_instruments

    body = strip_stream_annotations(strip_prompt_lines(text))
    if is_interleaved(body) and is_rest_reduced(body):
        body = rest_unreduce(body)
    musicxml = midi = None
    try:
        musicxml = set_instruments(abc_to_musicxml(body))[0]
        midi = render_midi(musicxml)
    except ConversionError:
        pass
    return judge_abc(body, musicxml, midi)


def check_file(path: Path, strict: bool = True, judges: bool = False, tune: int | None = None):
    """`notagen check` on one file in the current process (`check_command` runs it in a bounded worker): the
    validity report and, with `judges`, the outside judges' verdict. A file of several tunes needs `tune`."""
    from notagen.convert import _select_tune, read_text_score
    from notagen.limits import scan_abc

    path = Path(path)
    text = _select_tune(path, read_text_score(path), tune)
    scan_abc(text, str(path))
    report = check_abc(text, strict=strict)
    return report, judge_text(text) if judges else None


def check_command(file: Path, json: bool = False, strict: bool = True, judges: bool = False,
                  tune: int | None = None, max_input_mb: float | None = None, max_voices: int | None = None,
                  max_notes_per_bar: int | None = None, max_seconds: float | None = None,
                  max_memory_mb: int | None = None) -> int:
    """Check that an ABC file is a valid piece, by the rules the programs musicians use enforce.

    Strict (the default): the ABC is well formed (known tokens, ties join equal pitches, slurs, tuplets and grace
    groups closed), every bar of every voice lasts the meter (a pickup and the bar completing it excepted), key and
    meter changes happen in all voices at once, keys have at most 7 sharps or flats, repeats agree across voices,
    every note lies in its part's range, and abc2xml reads it. Each failure names the bar, the voice and the rule.
    Accepts standard or interleaved ABC, also generated text with [r:] annotations, prompt lines and omitted
    whole-rest voices. Exits with status 1 when the piece is invalid.

    Args:
        file: The ABC file to check.
        json: Print the report as JSON instead of text.
        strict: Apply every rule (--no-strict: only that abc2xml reads it and the voices' bars line up).
        judges: Also ask the programs musicians use: abc2midi and abcm2ps (their warnings), music21 (measures
            that fill their time signatures) and mido (the MIDI file); those not installed are skipped.
        tune: For ABC files with several X: tunes, which one (1-based); such a file is refused without it.
        max_input_mb: Refuse a file larger than this (default 20; 0: no bound).
        max_voices: Refuse a piece with more voices (default 128).
        max_notes_per_bar: Refuse a piece with more notes in one bar of one voice (default 1024).
        max_seconds: Stop the check after this many seconds (default 300).
        max_memory_mb: Stop the check when its process needs more memory than this (default 4096).

    The check runs in a worker process bounded by these limits; hitting one is reported in one line.

    Examples:
        notagen check generated.abc
        notagen check piece.abc --json
        notagen check piece.abc --no-strict
        notagen check piece.abc --judges
        notagen check tunes.abc --tune 3
    """
    from notagen.limits import cli_limits, run_limited

    path = Path(file)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    limits = cli_limits(max_input_mb, None, max_voices, max_notes_per_bar, max_seconds, max_memory_mb)
    report, verdict = run_limited(check_file, path, strict, judges, tune, limits=limits, name=str(path))
    if json:
        extra = {"judges": verdict.to_dict()} if verdict is not None else {}
        print(json_module.dumps({"file": str(path), **report.to_dict(), **extra}, indent=2))
    else:
        print(format_report(str(path), report))
        for judge in verdict.verdicts if verdict is not None else []:
            if not judge.available:
                print(f"  {judge.judge}: not installed")
            elif judge.accepted:
                print(f"  {judge.judge}: accepts")
            else:
                print(f"  {judge.judge}: REJECTS ({len(judge.problems)} problem(s)): {judge.problems[0]}")
    accepted = verdict is None or verdict.accepted
    return 0 if report.valid and accepted else 1
