"""Music-theory report: what a musician sees in a score at once, measured the same way for generated and real pieces.

One parsing path for both sides: interleaved (or standard) ABC → MusicXML with `notagen.convert.abc_to_musicxml`
→ music21. Each piece gives one value per metric (None where the metric does not apply, e.g. beat chords of a
single line). `notagen.metrics.theory_report` summarises sets of pieces (mean, standard error, N per metric) and
lays out the report; docs/evaluation.md says exactly how each number is computed.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from notagen.abc.text import header_lines, prompt_lines
from notagen.errors import ConversionError, InputError, NotaGenError
from notagen.instruments import (
    Instrument,
    clef_fits,
    identify_part,
    match_ensemble,
    name_ensemble,
    score_staves,
    voice_instruments,
)
from notagen.prompt import Prompt


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    """"share" (a fraction, shown as a percentage) or "rate" (a count per 100 beats or notes)."""
    better: str
    """"high" or "low": which way a musician wants it (for plots and readers; the report judges nothing)."""


METRICS: tuple[Metric, ...] = (
    Metric("tonic_ending", "ends on its tonic chord (root and bass)", "share", "high"),
    Metric("beat_triads", "beat chords that are triads or sevenths", "share", "high"),
    Metric("parallel_fifths", "parallel 5ths per 100 beats", "rate", "low"),
    Metric("parallel_octaves", "parallel 8ves/unisons per 100 beats", "rate", "low"),
    Metric("octave_doublings", "octave doubling (instrumental) per 100 beats", "rate", "low"),
    Metric("whole_bar_rests", "part-bars that are whole-bar rests", "share", "low"),
    Metric("leaps", "leaps over an octave per 100 notes", "rate", "low"),
    Metric("out_of_range_notes", "notes outside their part's range", "share", "low"),
    Metric("out_of_range_pieces", "pieces with a note outside a part's range", "share", "low"),
    Metric("key_agrees", "key signature agrees with key analysis", "share", "high"),
    Metric("keys_differ", "pieces whose voices are in different keys", "share", "low"),
    Metric("fermatas_aligned", "fermatas in all sounding voices at once", "share", "high"),
    Metric("instrumentation_fit", "instrumentation fits the prompt", "share", "high"),
    Metric("prompt_as_asked", "prompt lines written back as asked", "share", "high"),
    Metric("sections_4n", "single line: sections of 4n bars", "share", "high"),
    Metric("repeats", "single line: pieces with repeats", "share", "high"),
    Metric("distinct_patterns", "distinct 4-bar melodic patterns (top voice)", "share", "high"),
)
METRIC_KEYS = tuple(m.key for m in METRICS)

# Pitch-class sets (intervals above the root) of triads and seventh chords; a seventh chord may omit its fifth.
_TRIADS = ({0, 4, 7}, {0, 3, 7}, {0, 3, 6}, {0, 4, 8})
_SEVENTHS = ({0, 4, 7, 10}, {0, 4, 7, 11}, {0, 3, 7, 10}, {0, 3, 6, 10}, {0, 3, 6, 9}, {0, 3, 7, 11}, {0, 4, 8, 11})
_FIFTHLESS_SEVENTHS = ({0, 4, 10}, {0, 4, 11}, {0, 3, 10})
TERTIAN = tuple(frozenset(s) for s in _TRIADS + _SEVENTHS + _FIFTHLESS_SEVENTHS)
LEAP_SEMITONES = 12
"""A leap *over* an octave: more than 12 semitones between consecutive notes of a line."""
DOUBLING_SHARE = 0.5
"""Two instrumental lines in octaves or unison at least this share of the time double each other."""
PATTERN_BARS = 4
SINGLE_LINE_CHORD_SHARE = 0.05
"""A one-staff part is a single-line tune when at most this share of its notes are chords."""
_UNNAMED = re.compile(r"^(?:MusicXML Part|Part|P\d+|Staff)?\s*\d*$", re.IGNORECASE)
_SECTION_BARLINES = ("double", "final", "light-light", "light-heavy", "heavy-light", "heavy-heavy", "heavy")


# --- The parsed piece ---------------------------------------------------------------------------------------------

@dataclass
class Event:
    """A note, chord or rest of one staff, ties joined."""

    onset: float
    end: float
    pitches: tuple[int, ...]  # MIDI numbers, ascending; empty for a rest
    bar: int  # index of the bar in the staff
    fermata: bool = False
    voice: int = 0  # which of the staff's voices (music21 voices in id order; 0 when the staff has one)


@dataclass
class Staff:
    name: str
    part: str  # id of the score part it belongs to (the staves of a piano share one)
    clef: str | None
    events: list[Event]
    bar_has_notes: list[bool]
    bar_sharps: list[int | None]  # key signature in force in each bar (sharps, flats negative)
    voice_instruments: list[Instrument] = field(default_factory=list)
    """The instrument of each voice of a staff that several named voices share (`( 2 3 )` in `%%score`), in
    voice order; empty when the staff's part instrument stands for all its notes."""
    onsets: list[float] = field(init=False, repr=False)
    reach: list[float] = field(init=False, repr=False)  # the latest end among events[: i + 1]

    def __post_init__(self) -> None:
        self.events.sort(key=lambda e: (e.onset, e.pitches))
        self.onsets = [e.onset for e in self.events]
        self.reach, latest = [], -math.inf
        for event in self.events:
            latest = max(latest, event.end)
            self.reach.append(latest)

    def sounding(self, time: float) -> list[int]:
        """Pitches of this staff sounding at `time` (inner voices included)."""
        out: list[int] = []
        j = bisect.bisect_right(self.onsets, time) - 1
        while j >= 0 and self.reach[j] > time + 1e-9:  # no earlier event reaches `time` once reach[j] <= time
            event = self.events[j]
            if event.pitches and event.end > time + 1e-9:
                out.extend(event.pitches)
            j -= 1
        return out

    @property
    def notes(self) -> list[Event]:
        return [e for e in self.events if e.pitches]

    def line(self) -> list[Event]:
        """The staff's top line: at each onset the highest pitch (chords and inner voices give their top note)."""
        by_onset: dict[float, Event] = {}
        for event in self.events:
            if not event.pitches:
                continue
            top = by_onset.get(event.onset)
            if top is None or event.pitches[-1] > top.pitches[-1]:
                by_onset[event.onset] = event
        return [Event(e.onset, e.end, (e.pitches[-1],), e.bar, e.fermata) for _, e in sorted(by_onset.items())]


@dataclass
class Bar:
    offset: float
    length: float  # quarter notes
    beat: float  # quarter notes per beat of the time signature in force
    meter: float  # quarter notes of a full bar
    right: str = ""  # barline type at the end ("double", "final", "repeat", …)
    repeat_start: bool = False


@dataclass
class Parsed:
    staves: list[Staff]
    bars: list[Bar]
    declared_sharps: int | None
    declared_tonic: int | None  # pitch class, when the key signature names a mode
    analysed: Any  # music21 Key (the best), with alternateInterpretations
    instruments: list[tuple[str, Instrument, list[str | None]]]  # per score part: name, instrument, staff clefs

    @property
    def beats(self) -> float:
        return sum(bar.length / bar.beat for bar in self.bars if bar.beat > 0)


def _clef_name(clef: Any) -> str | None:
    if clef is None:
        return None
    sign = getattr(clef, "sign", None)
    if sign == "G":
        return "treble"
    if sign == "F":
        return "bass"
    if sign == "C":
        return {1: "soprano", 2: "mezzo-soprano", 3: "alto", 4: "tenor", 5: "baritone"}.get(clef.line, "alto")
    if sign == "percussion":
        return "percussion"
    return None


def _part_name(part: Any) -> str:
    name = (part.partName or "").strip()
    return "" if _UNNAMED.match(name) else name


def _voices(measure: Any) -> list[tuple[str, float, Any]]:
    """(voice id, offset in the measure, element) of every note and rest of a measure; "" for notes outside a
    music21 voice."""
    from music21 import stream

    if not measure.hasVoices():
        return [("", float(e.offset), e) for e in measure.flatten().notesAndRests]
    out = [("", float(e.offset), e) for e in measure.notesAndRests]
    for voice in measure.getElementsByClass(stream.Voice):
        out.extend((str(voice.id), float(voice.offset) + float(e.offset), e) for e in voice.flatten().notesAndRests)
    return out


def _voice_order(voice_id: str) -> tuple[int, str]:
    return (int(voice_id), "") if voice_id.isdigit() else (10**6, voice_id)


def _staff(part: Any, part_id: str) -> tuple[Staff, list[Bar]]:
    from music21 import bar as m21bar
    from music21 import clef as m21clef
    from music21 import expressions, key, meter, stream

    measures = list(part.getElementsByClass(stream.Measure))
    if not measures:
        part = part.makeMeasures()
        measures = list(part.getElementsByClass(stream.Measure))
    bars: list[Bar] = []
    has_notes: list[bool] = []
    sharps: list[int | None] = []
    current_ts = None
    current_sharps: int | None = None
    for m in measures:
        ts = next(iter(m.getElementsByClass(meter.TimeSignature)), None)
        current_ts = ts or current_ts
        signatures = list(m.recurse().getElementsByClass(key.KeySignature))
        if signatures:  # the last one wins: a voice's own `[K:]` follows the header key in its first bar
            current_sharps = signatures[-1].sharps
        sharps.append(current_sharps)
        beat = float(current_ts.beatDuration.quarterLength) if current_ts else 1.0
        full = float(current_ts.barDuration.quarterLength) if current_ts else float(m.highestTime)
        right = m.rightBarline
        right_type = ""
        if isinstance(right, m21bar.Repeat) and right.direction == "end":
            right_type = "repeat"
        elif right is not None:
            right_type = right.type or ""
        left = m.leftBarline
        bars.append(Bar(float(m.offset), float(m.highestTime), beat, full, right_type,
                        isinstance(left, m21bar.Repeat) and left.direction == "start"))
        has_notes.append(any(n.duration.quarterLength > 0 for n in m.recurse().notes))
    clef = next(iter(part.recurse().getElementsByClass(m21clef.Clef)), None)
    events: list[Event] = []
    # a tied note or chord waiting for its continuation, by voice and pitches
    open_ties: dict[tuple[int, tuple[int, ...]], Event] = {}
    elements = [_voices(m) for m in measures]
    voice_ids = sorted({vid for found in elements for vid, _, _ in found if vid}, key=_voice_order)
    voice_index = {vid: number for number, vid in enumerate(voice_ids)}
    for index, (m, found) in enumerate(zip(measures, elements)):
        base = float(m.offset)
        for voice_id, offset, element in sorted(found, key=lambda item: item[1]):
            voice = voice_index.get(voice_id, 0)
            length = float(element.duration.quarterLength)
            if length <= 0:
                continue  # grace notes take no time
            pitches = tuple(sorted(int(p.midi) for p in element.pitches)) if not element.isRest else ()
            fermata = any(isinstance(x, expressions.Fermata) for x in element.expressions)
            onset = base + offset
            tie = element.tie.type if pitches and element.tie is not None else None
            held = open_ties.pop((voice, pitches), None) if tie in ("stop", "continue") else None
            if held is not None and abs(held.end - onset) < 1e-6:  # ties joined (music21's stripTies, cheaper)
                held.end = onset + length
                held.fermata = held.fermata or fermata
                event = held
            else:
                event = Event(onset, onset + length, pitches, index, fermata, voice)
                events.append(event)
            if tie in ("start", "continue"):
                open_ties[(voice, pitches)] = event
    return Staff(_part_name(part), part_id, _clef_name(clef), events, has_notes, sharps), bars


def parse_piece(text: str) -> Parsed:
    """Interleaved or standard ABC (prompt lines, `[r:]` and rest-reduced text allowed) → the analysed piece.

    Raises ConversionError when the ABC does not convert or music21 cannot read it, InputError when it has no notes.
    """
    from music21 import converter

    from notagen.convert import abc_to_musicxml

    xml = abc_to_musicxml(text)
    try:
        score = converter.parse(xml, format="musicxml")
    except Exception as error:  # music21 raises many unrelated exception types on odd MusicXML
        raise ConversionError(f"music21 cannot read the MusicXML: {type(error).__name__}: {error}") from error
    header = header_lines(text)  # not the body's `V:1` lines of standard ABC, which would replace the definitions
    instruments = voice_instruments(header)
    staves = [[instruments[vid] for vid in staff if vid in instruments] for staff in score_staves(header)]
    return parse_score(score, staves)


def parse_score(score: Any, staff_voices: Sequence[Sequence[Instrument]] = ()) -> Parsed:
    """A music21 score → the analysed piece (see `parse_piece`).

    `staff_voices`: the instrument of each voice of each staff, top to bottom, as the ABC header names them. A
    MusicXML part carries one name, its first voice's, so the notes of the Tenor and Bass sharing a staff would
    otherwise be judged against the Tenor's range; used only when it lists as many staves as the score has."""
    from music21 import key, layout, stream

    parts = list(score.parts) if hasattr(score, "parts") else []
    if not parts:
        raise InputError("the score has no parts")
    # Staves joined by a brace whose lower staves carry no name of their own are one instrument (a grand staff):
    # abc2xml writes `%%score {1 | 2}` of unnamed voices as two parts in a brace group.
    braced: dict[int, str] = {}
    for group in score.getElementsByClass(layout.StaffGroup):
        members = [p for p in group.getSpannedElements() if isinstance(p, stream.Part)]
        if group.symbol == "brace" and len(members) >= 2 and not any(_part_name(p) for p in members[1:]):
            for member in members:
                braced[id(member)] = f"brace#{id(members[0])}"
    staves: list[Staff] = []
    bars: list[Bar] = []
    groups: dict[str, list[Staff]] = {}
    for number, part in enumerate(parts):
        part_id = str(part.id)
        if isinstance(part, stream.PartStaff):
            part_id = re.sub(r"-Staff\d+$", "", part_id)
        else:
            part_id = braced.get(id(part), f"{part_id}#{number}")
        staff, staff_bars = _staff(part, part_id)
        if len(staff_voices) == len(parts) and len(staff_voices[number]) > 1:
            staff.voice_instruments = list(staff_voices[number])
        staves.append(staff)
        groups.setdefault(part_id, []).append(staff)
        if not bars or len(staff_bars) > len(bars):
            bars = staff_bars if not bars else bars + staff_bars[len(bars):]
    if not any(staff.notes for staff in staves):
        raise InputError("the score has no notes")
    instruments = []
    for staff_group in groups.values():
        name = next((s.name for s in staff_group if s.name), "")
        clefs = [s.clef for s in staff_group]
        instruments.append((name, identify_part(name, clefs), clefs))
    first_ks = next(iter(score.recurse().getElementsByClass(key.KeySignature)), None)
    declared_sharps = first_ks.sharps if first_ks is not None else None
    declared_tonic = None
    if isinstance(first_ks, key.Key) and first_ks.mode in ("major", "minor"):
        declared_tonic = first_ks.tonic.pitchClass
    try:
        analysed = score.analyze("key")
    except Exception:  # music21's key analysis fails on pieces without pitched notes in some voices
        analysed = None
    return Parsed(staves, bars, declared_sharps, declared_tonic, analysed, instruments)


# --- Metrics of one piece -----------------------------------------------------------------------------------------

def signature_keys(sharps: int) -> set[tuple[int, str]]:
    """The (tonic pitch class, mode) of the major key and its relative minor with this key signature."""
    major = (7 * sharps) % 12
    return {(major, "major"), ((major + 9) % 12, "minor")}


def _pc_mode(k: Any) -> tuple[int, str]:
    return k.tonic.pitchClass, k.mode


def tonics_of(piece: Parsed) -> tuple[set[int], str]:
    """The tonic pitch classes a piece may end on: the declared key's tonic (key signature and mode); the tonic of
    the key analysis ranks higher among the signature's major and relative minor (encodings often omit or misstate
    the mode; enharmonic spellings are the same key); and the analysed key's tonic (Baroque minor keys are often
    written with one flat fewer, a "Dorian" signature). Returns (pitch classes, the analysed keys' names)."""
    tonics = {piece.declared_tonic} if piece.declared_tonic is not None else set()
    if piece.analysed is None:
        return tonics, ""
    tonics.add(piece.analysed.tonic.pitchClass)
    names = [str(piece.analysed)]
    if piece.declared_sharps is not None:
        allowed = signature_keys(piece.declared_sharps)
        candidates = [piece.analysed, *getattr(piece.analysed, "alternateInterpretations", [])]
        same = [k for k in candidates if _pc_mode(k) in allowed]
        if same:
            best = max(same, key=lambda k: k.correlationCoefficient)
            tonics.add(best.tonic.pitchClass)
            names += [str(best)] if str(best) != names[0] else []
    return tonics, " / ".join(names)


def sounding(piece: Parsed, time: float) -> list[int]:
    """MIDI pitches sounding at `time` in any staff (notes that start at or before it and end after it)."""
    return sorted(p for staff in piece.staves for p in staff.sounding(time))


def final_chord(piece: Parsed) -> list[int]:
    """The pitches sounding at the last onset of any note (the final chord; a single note for a tune)."""
    last = max((e.onset for staff in piece.staves for e in staff.notes), default=None)
    return sounding(piece, last) if last is not None else []


def chord_root(pitches: Sequence[int]) -> int | None:
    """music21's root of the chord (pitch class); the note itself for one pitch class."""
    from music21 import chord

    classes = sorted({p % 12 for p in pitches})
    if not classes:
        return None
    if len(classes) == 1:
        return classes[0]
    return chord.Chord([60 + pc for pc in classes]).root().pitchClass


def is_tertian(pitches: Sequence[int]) -> bool:
    """True when the pitch classes form a triad (major, minor, diminished, augmented) or a seventh chord (complete,
    or without its fifth), over some root among them."""
    classes = {p % 12 for p in pitches}
    return any(frozenset((pc - root) % 12 for pc in classes) in TERTIAN for root in classes)


def beat_times(piece: Parsed) -> list[float]:
    """Every beat of every bar (offsets in quarter notes): bar offset + k × beat length of the time signature."""
    times = []
    for bar in piece.bars:
        if bar.beat <= 0:
            continue
        k = 0
        while k * bar.beat < bar.length - 1e-9:
            times.append(bar.offset + k * bar.beat)
            k += 1
    return times


def _pair_is_vocal(a: Instrument, b: Instrument) -> bool:
    return a.family == "voice" and b.family == "voice"


def _sample(line: list[Event], times: list[float]) -> list[int | None]:
    """The line's pitch sounding at each time (None in a rest)."""
    onsets = [e.onset for e in line]
    out: list[int | None] = []
    for time in times:
        index = bisect.bisect_right(onsets, time) - 1
        event = line[index] if index >= 0 else None
        out.append(event.pitches[0] if event is not None and event.onset <= time < event.end else None)
    return out


def parallels(piece: Parsed) -> dict[str, Any]:
    """Parallel perfect fifths and octaves (unisons included) between every pair of staves' top lines.

    At each pair of consecutive onsets of either line where both lines sound, both move to a new pitch in the same
    direction and the interval (modulo the octave) is a perfect fifth (7) or octave/unison (0) before and after,
    the motion is a parallel. Between two instruments (any pair that is not two voices) octave motions are octave
    doubling, counted apart, when they come in runs of two or more, or when the two lines sound in octaves or
    unison at least half the time they sound together (one doubles the other, colla parte).
    """
    staff_instrument = _staff_instruments(piece)
    fifths = octaves = doublings = 0
    where: list[str] = []
    lines = [staff.line() for staff in piece.staves]
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            a, b = lines[i], lines[j]
            if not a or not b:
                continue
            times = sorted({e.onset for e in a} | {e.onset for e in b})
            pa, pb = _sample(a, times), _sample(b, times)
            instrumental = not _pair_is_vocal(staff_instrument[i], staff_instrument[j])
            together = [(x, y) for x, y in zip(pa, pb) if x is not None and y is not None]
            colla_parte = instrumental and bool(together) and \
                sum(abs(x - y) % 12 == 0 for x, y in together) >= DOUBLING_SHARE * len(together)
            run: list[int] = []  # indices of consecutive parallel octave motions
            for t in range(1, len(times) + 1):
                kind = None
                if t < len(times):
                    x0, x1, y0, y1 = pa[t - 1], pa[t], pb[t - 1], pb[t]
                    if None not in (x0, x1, y0, y1) and x0 != x1 and y0 != y1 and (x1 - x0) * (y1 - y0) > 0:
                        before, after = abs(x0 - y0) % 12, abs(x1 - y1) % 12
                        if before == after == 7:
                            kind = "fifth"
                        elif before == after == 0:
                            kind = "octave"
                if kind == "octave":
                    run.append(t)
                    continue
                if run:  # a run of octave motions ended
                    if instrumental and (len(run) >= 2 or colla_parte):
                        doublings += len(run)
                    else:
                        octaves += len(run)
                        where.extend(f"8ve {i + 1}-{j + 1} at {times[k]:g}" for k in run)
                    run = []
                if kind == "fifth":
                    fifths += 1
                    where.append(f"5th {i + 1}-{j + 1} at {times[t]:g}")
    return {"fifths": fifths, "octaves": octaves, "doublings": doublings, "where": where[:20]}


def _staff_instruments(piece: Parsed) -> list[Instrument]:
    by_part = {}
    part_ids = list(dict.fromkeys(s.part for s in piece.staves))
    for part_id, (_, instrument, _) in zip(part_ids, piece.instruments):
        by_part[part_id] = instrument
    return [by_part[s.part] for s in piece.staves]


def whole_bar_rests(piece: Parsed) -> tuple[int, int]:
    """(part-bars without a sounding note, part-bars): a bar counts when a staff has no note in it at all."""
    rests = bars = 0
    for staff in piece.staves:
        rests += sum(not has for has in staff.bar_has_notes)
        bars += len(staff.bar_has_notes)
    return rests, bars


def leaps(piece: Parsed) -> tuple[int, int]:
    """(leaps over an octave, notes) along each staff's top line; a rest between two notes breaks the line."""
    count = notes = 0
    for staff in piece.staves:
        line = staff.line()
        notes += len(line)
        for previous, event in zip(line, line[1:]):
            joined = event.onset <= previous.end + 1e-9  # no silence in between
            count += joined and abs(event.pitches[0] - previous.pitches[0]) > LEAP_SEMITONES
    return count, notes


def out_of_range(piece: Parsed) -> tuple[int, int, list[str]]:
    """(notes outside their part's range, notes, examples): each pitch (chord notes too) against the range of the
    part's instrument with the table's margin (`notagen.instruments`); a voice sharing a staff against its own."""
    instruments = _staff_instruments(piece)
    outside = total = 0
    examples: list[str] = []
    for staff, part_instrument in zip(piece.staves, instruments):
        for event in staff.notes:
            instrument = part_instrument
            if event.voice < len(staff.voice_instruments):  # a voice sharing the staff: its own range
                instrument = staff.voice_instruments[event.voice]
            low, high = instrument.bounds()
            for pitch in event.pitches:
                total += 1
                if not low <= pitch <= high:
                    outside += 1
                    if len(examples) < 10:
                        examples.append(f"{instrument.name} {pitch} in bar {event.bar + 1}")
    return outside, total, examples


def keys_differ(piece: Parsed) -> bool:
    """True when in some bar the staves' key signatures in force differ (percussion staves aside)."""
    staves = [s for s in piece.staves if s.clef != "percussion"]
    longest = max((len(s.bar_sharps) for s in staves), default=0)
    for index in range(longest):
        values = {s.bar_sharps[index] for s in staves if index < len(s.bar_sharps)}
        if len(values) > 1:
            return True
    return False


def fermatas(piece: Parsed) -> tuple[int, int]:
    """(aligned fermata moments, fermata moments). Fermata notes of all staves whose time spans overlap form one
    moment; it is aligned when every staff that sounds a note during it has a fermata in it."""
    spans = sorted((e.onset, e.end, index) for index, staff in enumerate(piece.staves) for e in staff.events
                   if e.fermata)
    moments: list[tuple[float, float, set[int]]] = []
    for onset, end, index in spans:
        if moments and onset < moments[-1][1] - 1e-9:
            start, stop, staves = moments[-1]
            moments[-1] = (start, max(stop, end), staves | {index})
        else:
            moments.append((onset, end, {index}))
    aligned = 0
    for start, stop, with_fermata in moments:
        sounding_staves = {index for index, staff in enumerate(piece.staves)
                           if any(e.pitches and e.onset < stop - 1e-9 and e.end > start + 1e-9 for e in staff.events)}
        aligned += sounding_staves <= with_fermata
    return aligned, len(moments)


def instrumentation_fit(piece: Parsed, instrumentation: str | None) -> tuple[bool | None, str, list[str]]:
    """(fit, ensemble written, reasons): the parts' instruments form an ensemble of the prompt's instrumentation
    (`notagen.instruments.ENSEMBLES`), every part starts in a clef its instrument uses, and no note lies outside a
    part's range. None when the label has no ensembles to judge by."""
    instruments = [instrument for _, instrument, _ in piece.instruments]
    written = name_ensemble(instruments)
    from notagen.instruments import ENSEMBLES

    if not instrumentation or instrumentation not in ENSEMBLES:
        return None, written, []
    reasons = []
    ensemble = match_ensemble(instrumentation, instruments)
    if ensemble is None:
        reasons.append(f"{written} is not a {instrumentation} ensemble")
    for name, instrument, clefs in piece.instruments:
        if instrument.family != "keyboard" and not clef_fits(instrument, clefs[0] if clefs else None):
            reasons.append(f"{name or instrument.name} in {clefs[0]} clef")
    outside, _, examples = out_of_range(piece)
    if outside:
        reasons.append(f"{outside} notes out of range ({', '.join(examples[:3])})")
    return not reasons, (ensemble.name if ensemble else written), reasons


def is_single_line(piece: Parsed) -> bool:
    if len(piece.staves) != 1:
        return False
    notes = piece.staves[0].notes
    return bool(notes) and sum(len(e.pitches) > 1 for e in notes) <= SINGLE_LINE_CHORD_SHARE * len(notes)


def sections(piece: Parsed) -> list[float]:
    """Section lengths in bars of the meter (pickups and incomplete last bars add up), split at double, final and
    repeat barlines and at repeat starts."""
    lengths: list[float] = []
    current = 0.0
    for bar in piece.bars:
        if bar.repeat_start and current > 0:
            lengths.append(current)
            current = 0.0
        current += bar.length / bar.meter if bar.meter > 0 else 0.0
        if bar.right in _SECTION_BARLINES or bar.right == "repeat":
            lengths.append(current)
            current = 0.0
    if current > 1e-6:
        lengths.append(current)
    return lengths


def _is_multiple_of_four(bars: float) -> bool:
    return bars >= 3.5 and abs(bars / 4 - round(bars / 4)) * 4 < 0.05


def melodic_patterns(piece: Parsed) -> tuple[int, int]:
    """(distinct 4-bar windows, windows) of the top staff's line: each window of 4 consecutive bars (every start
    bar) is the sequence of (interval from the previous note of the window, duration) of its notes and rests, so
    the same melody and rhythm at another pitch is the same pattern. Windows that are all rest are skipped."""
    if not piece.staves:
        return 0, 0
    staff = piece.staves[0]
    line = staff.line()
    onsets_by_bar: dict[int, list[tuple[float, float, int | None]]] = {}
    for event in line:
        onsets_by_bar.setdefault(event.bar, []).append((event.onset, round(event.end - event.onset, 4),
                                                        event.pitches[0]))
    silent = [e for e in staff.events if not e.pitches]  # rests where no note of the staff sounds
    for event, pitch in zip(silent, _sample(line, [e.onset for e in silent])):
        if pitch is None:
            onsets_by_bar.setdefault(event.bar, []).append((event.onset, round(event.end - event.onset, 4), None))
    bars = len(staff.bar_has_notes)
    windows: list[tuple] = []
    for start in range(0, bars - PATTERN_BARS + 1):
        items = sorted(x for b in range(start, start + PATTERN_BARS) for x in onsets_by_bar.get(b, []))
        if not any(pitch is not None for _, _, pitch in items):
            continue
        pattern = []
        previous = None
        for _, length, pitch in items:
            if pitch is None:
                pattern.append(("r", length))
                continue
            pattern.append((pitch - previous if previous is not None else None, length))
            previous = pitch
        windows.append(tuple(pattern))
    return len(set(windows)), len(windows)


def prompt_as_asked(raw: str | None, asked: dict[str, str] | None) -> tuple[bool | None, list[str]]:
    """(the prompt block in the raw text is exactly the asked period, composer, instrumentation; the lines found).
    None when there is no raw text, no asked prompt or no prompt block."""
    if raw is None or not asked:
        return None, []
    lines = prompt_lines(raw)
    if not lines:
        return None, []
    wanted = Prompt.of(asked)
    return wanted is not None and lines == list(wanted.fields()), lines


def _share(count: int | bool, total: int) -> float | None:
    return float(count) / total if total else None


def _rate(count: int, total: float, per: float = 100.0) -> float | None:
    return per * count / total if total > 0 else None


def analyse(piece: Parsed, instrumentation: str | None = None, raw: str | None = None,
            asked: dict[str, str] | None = None) -> dict[str, Any]:
    """Every metric of one parsed piece: {"values": {metric: float | None}, "detail": {...}}."""
    values: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    detail: dict[str, Any] = {}
    beats = piece.beats
    detail["beats"] = round(beats, 3)
    detail["bars"] = len(piece.bars)
    detail["staves"] = len(piece.staves)

    tonics, key_name = tonics_of(piece)
    chord = final_chord(piece)
    detail["key"] = key_name
    detail["tonics"] = sorted(tonics)
    detail["final_chord"] = chord
    if tonics and chord:
        root = chord_root(chord)
        values["tonic_ending"] = float(root in tonics and chord[0] % 12 == root)

    multi = len(piece.staves) >= 2 or any(len(e.pitches) > 1 for s in piece.staves for e in s.notes)
    if multi:
        full = [pitches for pitches in (sounding(piece, t) for t in beat_times(piece)) if len(pitches) >= 3]
        values["beat_triads"] = _share(sum(is_tertian(p) for p in full), len(full))
        detail["beat_chords"] = len(full)
    if len(piece.staves) >= 2:
        par = parallels(piece)
        values["parallel_fifths"] = _rate(par["fifths"], beats)
        values["parallel_octaves"] = _rate(par["octaves"], beats)
        values["octave_doublings"] = _rate(par["doublings"], beats)
        detail["parallels"] = par
    rests, part_bars = whole_bar_rests(piece)
    values["whole_bar_rests"] = _share(rests, part_bars)
    leap_count, notes = leaps(piece)
    values["leaps"] = _rate(leap_count, notes)
    detail["notes"] = notes
    outside, pitches, examples = out_of_range(piece)
    values["out_of_range_notes"] = _share(outside, pitches)
    values["out_of_range_pieces"] = float(outside > 0) if pitches else None
    detail["out_of_range"] = examples
    if piece.analysed is not None and piece.declared_sharps is not None:
        values["key_agrees"] = float(_pc_mode(piece.analysed) in signature_keys(piece.declared_sharps))
        detail["analysed_key"] = str(piece.analysed)
    if len(piece.staves) >= 2:
        values["keys_differ"] = float(keys_differ(piece))
        aligned, moments = fermatas(piece)
        values["fermatas_aligned"] = _share(aligned, moments)
        detail["fermata_moments"] = moments
    fit, ensemble, reasons = instrumentation_fit(piece, instrumentation)
    values["instrumentation_fit"] = None if fit is None else float(fit)
    detail["ensemble"] = ensemble
    detail["instruments"] = [instrument.name for _, instrument, _ in piece.instruments]
    detail["fit_reasons"] = reasons
    as_asked, lines = prompt_as_asked(raw, asked)
    values["prompt_as_asked"] = None if as_asked is None else float(as_asked)
    if lines:
        detail["prompt_lines"] = lines
    if is_single_line(piece):
        lengths = sections(piece)
        values["sections_4n"] = _share(sum(_is_multiple_of_four(x) for x in lengths), len(lengths))
        values["repeats"] = float(any(bar.right == "repeat" or bar.repeat_start for bar in piece.bars))
        detail["sections"] = [round(x, 3) for x in lengths]
    distinct, windows = melodic_patterns(piece)
    values["distinct_patterns"] = _share(distinct, windows)
    return {"values": values, "detail": detail}


REWARD_TERMS = ("tonic_ending", "beat_triads", "instrumentation_fit", "parallels", "whole_bar_rests",
                "out_of_range_pieces")
"""The terms `theory_reward` averages ("parallels" is parallel 5ths and 8ves together)."""


def theory_reward(values: dict[str, float | None], terms: Sequence[str] = REWARD_TERMS) -> float | None:
    """One number in [0, 1] from a piece's theory values, higher for what a musician accepts: the mean of its
    tonic ending, triad/seventh beat-chord share, instrumentation fit, a parallels score of 10 / (10 + parallel
    5ths + 8ves per 100 beats), and penalties that reach 0 at 10 % whole-bar rests and for any note outside a
    part's range (`terms` picks some of them). Metrics a piece does not have (a single line has no chords) are left
    out; None when none applies.

    The parallels score never flattens (1 at none, 1/2 at 10, 1/3 at 20 per 100 beats): a score that reached 0 at 10
    gave most of a weak model's chorales (15 per 100 beats on average) the same 0, so DPO had no pairs to learn
    fewer parallels from, and they rose."""
    scores: dict[str, float] = {}
    for key in ("tonic_ending", "beat_triads", "instrumentation_fit"):
        if values.get(key) is not None:
            scores[key] = float(values[key])
    fifths, octaves = values.get("parallel_fifths"), values.get("parallel_octaves")
    if fifths is not None and octaves is not None:
        scores["parallels"] = 10.0 / (10.0 + fifths + octaves)
    if values.get("whole_bar_rests") is not None:
        scores["whole_bar_rests"] = 1.0 - min(1.0, 10.0 * float(values["whole_bar_rests"]))
    if values.get("out_of_range_pieces") is not None:
        scores["out_of_range_pieces"] = 1.0 - float(values["out_of_range_pieces"])
    chosen = [scores[term] for term in terms if term in scores]
    return sum(chosen) / len(chosen) if chosen else None


def analyse_text(text: str, instrumentation: str | None = None, raw: str | None = None,
                 asked: dict[str, str] | None = None) -> dict[str, Any]:
    """`analyse` of an ABC text; a piece that does not convert or parse gives {"error": reason}."""
    try:
        piece = parse_piece(text)
        return analyse(piece, instrumentation, raw, asked)
    except NotaGenError as error:
        return {"error": str(error)}
    except Exception as error:  # music21 fails with arbitrary errors on broken scores: report, go on
        return {"error": f"{type(error).__name__}: {error}"}
