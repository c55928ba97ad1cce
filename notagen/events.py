"""Note events of a MusicXML score and their comparison: the check that a conversion kept the music.

An event is `(onset, MIDI pitch, duration)`, onset and duration in quarter notes as Fractions. Tied notes are
merged into one event, grace notes are left out, every note of a chord is an event, repeats are NOT expanded.
We read the XML with `xml.etree` ourselves (divisions, backup/forward, chord, tie): music21 is far too slow for a
check over a whole corpus. Onsets are measured the way the converters (Vree's xml2abc and abc2xml) measure them: a
bar lasts as long as its longest voice, and a `<backup>` that would go before the bar's start stops at the start
(xml2abc clamps it there too); `read_events` reports each such clamp. Comparisons allow onsets and durations to differ
by 1/48 of a quarter, because converters store triplets as e.g. 0.332/0.336.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction

Event = tuple[Fraction, int, Fraction]

_STEP_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
DEFAULT_TOLERANCE = Fraction(1, 24)


@dataclass(frozen=True)
class Where:
    """Where a note event sits: part (0-based index and name), staff, voice, bar (0-based measure index within the
    part, `number` its `number` attribute) and its offset from the bar's start in quarters."""

    part: int
    part_name: str
    staff: str
    voice: str
    bar: int
    number: str
    offset: Fraction
    tied_across_voices: bool = False   # a tie joined this note to a note of another voice


@dataclass
class ScoreEvents:
    """The events of a score, each with where it is (`where[i]` belongs to `events[i]`), and the warnings of the
    reading (one line each: clamped `<backup>` elements)."""

    events: list[Event] = field(default_factory=list)
    where: list[Where] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    part_names: list[str] = field(default_factory=list)    # per part, its <part-name> ("" when none)
    bar_numbers: list[list[str]] = field(default_factory=list)   # per part, the `number` of each measure


def _midi_pitch(note: ET.Element) -> int | None:
    pitch = note.find("pitch")
    if pitch is not None:
        step, octave = pitch.findtext("step"), pitch.findtext("octave")
        alter = pitch.findtext("alter")
    else:
        unpitched = note.find("unpitched")
        if unpitched is None:
            return None
        step, octave, alter = unpitched.findtext("display-step"), unpitched.findtext("display-octave"), None
    step = (step or "").strip()
    if step not in _STEP_PITCH or octave is None:
        return None
    try:
        semitones = round(float(alter)) if alter else 0
        return (int(octave) + 1) * 12 + _STEP_PITCH[step] + semitones
    except ValueError:
        return None


def _duration(element: ET.Element, divisions: Fraction) -> Fraction:
    text = (element.findtext("duration") or "").strip()
    if not text:
        return Fraction(0)
    try:
        return (Fraction(int(text)) if text.isdigit() else Fraction(text)) / divisions
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def _bar_name(measure: ET.Element, index: int) -> str:
    number = (measure.get("number") or "").strip()
    return number or str(index + 1)


def _part_events(measures: list[ET.Element], part: int, part_name: str, out: ScoreEvents) -> None:
    events: list[list] = []           # [onset, pitch, duration, where], mutable while ties are merged
    open_ties: dict[int, list[int]] = {}  # pitch -> indices of events whose tie is still open
    divisions = Fraction(1)
    measure_start = Fraction(0)
    for index, measure in enumerate(measures):
        number = _bar_name(measure, index)
        position = Fraction(0)
        measure_end = Fraction(0)
        last_onset = Fraction(0)
        for element in measure:
            tag = element.tag
            if tag == "attributes":
                text = (element.findtext("divisions") or "").strip()
                try:
                    if text and Fraction(text) > 0:
                        divisions = Fraction(text)
                except ValueError:
                    pass
            elif tag == "backup":
                step = _duration(element, divisions)
                if step > position:
                    label = f"part {part + 1}" + (f" ({part_name})" if part_name else "")
                    out.warnings.append(f"{label}, bar {number}: a <backup> of {_q(step)} quarters goes "
                                        f"{_q(step - position)} before the bar's start; clamped to the start, as "
                                        "xml2abc does")
                position = max(Fraction(0), position - step)
            elif tag == "forward":
                position += _duration(element, divisions)
                measure_end = max(measure_end, position)
            elif tag == "note":
                chord = element.find("chord") is not None
                grace = element.find("grace") is not None
                duration = Fraction(0) if grace else _duration(element, divisions)
                onset = last_onset if chord else position
                if not chord:
                    last_onset = position
                pitch = None if grace or element.find("rest") is not None else _midi_pitch(element)
                if pitch is not None:
                    where = Where(part, part_name, (element.findtext("staff") or "1").strip(),
                                  (element.findtext("voice") or "1").strip(), index, number, onset)
                    _add_note(events, open_ties, measure_start + onset, pitch, duration, element, where)
                if not chord and not grace:
                    position += duration
                    measure_end = max(measure_end, position)
        measure_start += measure_end
    for onset, pitch, duration, where in events:
        out.events.append((onset, pitch, duration))
        out.where.append(where)


def _q(value: Fraction) -> str:
    return f"{float(value):g}"


def _add_note(events: list[list], open_ties: dict[int, list[int]], onset: Fraction, pitch: int,
              duration: Fraction, note: ET.Element, where: Where) -> None:
    ties = {tie.get("type") for tie in note.findall("tie")}
    if not ties:  # some writers only give the notation
        ties = {tied.get("type") for tied in note.findall("notations/tied")}
    candidates = open_ties.get(pitch)
    # A tie start whose stop is missing (some editors write none) still joins the next note of that pitch that
    # begins where it ends, as xml2abc and notation programs read it; otherwise such scores fail verification.
    adjoining = next((i for i in reversed(candidates or []) if events[i][0] + events[i][2] == onset), None)
    if candidates and ("stop" in ties or adjoining is not None):
        # The tied-from note ends where this one starts; fall back to the latest open tie of this pitch.
        index = adjoining if adjoining is not None else candidates[-1]
        events[index][2] += duration
        if events[index][3].voice != where.voice:
            events[index][3] = replace(events[index][3], tied_across_voices=True)
        if "start" not in ties:
            candidates.remove(index)
        return
    events.append([onset, pitch, duration, where])
    if "start" in ties:
        open_ties.setdefault(pitch, []).append(len(events) - 1)


def parse_xml(xml_text: str | bytes) -> ET.Element:
    """The root element of XML text or bytes (a text's XML declaration is ignored); ValueError if not XML."""
    data = xml_text if isinstance(xml_text, bytes) else _XML_DECLARATION.sub("", xml_text, count=1).encode("utf-8")
    try:
        return ET.fromstring(data)
    except ET.ParseError as error:
        raise ValueError(f"not valid XML: {error}") from error


def _part_names(root: ET.Element) -> dict[str, str]:
    names = {}
    for score_part in root.iter("score-part"):
        name = " ".join((score_part.findtext("part-name") or "").split())
        names[score_part.get("id", "")] = name
    return names


def read_events(xml_text: str | bytes | ET.Element) -> ScoreEvents:
    """All note events of a MusicXML document (partwise or timewise) with where each one is, sorted by (onset,
    pitch, duration), and the reading's warnings.

    Raises ValueError when the text is not XML or not a MusicXML score.
    """
    root = xml_text if isinstance(xml_text, ET.Element) else parse_xml(xml_text)
    names = _part_names(root)
    parts: list[tuple[str, list[ET.Element]]] = []
    if root.tag == "score-partwise":
        parts = [(part.get("id", ""), part.findall("measure")) for part in root.findall("part")]
    elif root.tag == "score-timewise":
        by_part: dict[str, list[ET.Element]] = {}
        for measure in root.findall("measure"):
            for part in measure.findall("part"):
                copy = ET.Element("measure", measure.attrib)
                copy.extend(list(part))
                by_part.setdefault(part.get("id", ""), []).append(copy)
        parts = list(by_part.items())
    else:
        raise ValueError(f"not a MusicXML score (root element <{root.tag}>)")
    result = ScoreEvents()
    for index, (part_id, measures) in enumerate(parts):
        name = names.get(part_id, "")
        result.part_names.append(name)
        result.bar_numbers.append([_bar_name(measure, i) for i, measure in enumerate(measures)])
        _part_events(measures, index, name, result)
    order = sorted(range(len(result.events)), key=lambda i: result.events[i])
    result.events = [result.events[i] for i in order]
    result.where = [result.where[i] for i in order]
    return result


def musicxml_events(xml_text: str | bytes) -> list[Event]:
    """All note events of a MusicXML document (partwise or timewise), sorted by onset, pitch, duration.

    Raises ValueError when the text is not XML or not a MusicXML score.
    """
    return read_events(xml_text).events


def shift_pitches(events: Iterable[Event], semitones: int) -> list[Event]:
    """The same events transposed by `semitones`."""
    return sorted((onset, pitch + semitones, duration) for onset, pitch, duration in events)


@dataclass(frozen=True)
class EventComparison:
    """How well converted events match the source's: pairs of the same pitch whose onsets (and, with `durations`,
    durations) differ by at most half the tolerance."""

    matched: int
    total_source: int
    total_converted: int
    exact: bool
    ratio: float                      # matched / max(total_source, total_converted); 1.0 when both are empty
    first_mismatch: Fraction | None   # earliest onset of an unmatched event on either side


def match_events(source: list[Event], converted: list[Event], tolerance: Fraction = DEFAULT_TOLERANCE,
                 durations: bool = True) -> tuple[list[int], list[int]]:
    """Indices of the unmatched source events and of the unmatched converted events.

    Events match when they have the same pitch and their onsets (and, with `durations`, durations) differ by at most
    `tolerance / 2`; each event matches at most one other, the nearest onset first. A window rather than rounding
    to a grid, so that 0.3320 and 0.3333 (a triplet stored approximately) match wherever the grid falls.
    """
    window = Fraction(tolerance) / 2
    by_pitch: dict[int, list[int]] = {}
    for index, (_onset, pitch, _duration) in enumerate(converted):
        by_pitch.setdefault(pitch, []).append(index)
    onsets: dict[int, list[Fraction]] = {}
    for pitch, indices in by_pitch.items():
        indices.sort(key=lambda i: converted[i][0])
        onsets[pitch] = [converted[i][0] for i in indices]
    used: set[int] = set()
    unmatched_source: list[int] = []
    for index in sorted(range(len(source)), key=lambda i: source[i]):
        onset, pitch, duration = source[index]
        best = None
        candidates = by_pitch.get(pitch, [])
        for candidate in candidates[bisect_left(onsets.get(pitch, []), onset - window):]:
            other_onset, _, other_duration = converted[candidate]
            if other_onset > onset + window:
                break
            if candidate in used:
                continue
            if durations and abs(other_duration - duration) > window:
                continue
            if best is None or abs(other_onset - onset) < abs(converted[best][0] - onset):
                best = candidate
        if best is None:
            unmatched_source.append(index)
        else:
            used.add(best)
    unmatched_converted = [i for i in range(len(converted)) if i not in used]
    return unmatched_source, unmatched_converted


def compare_events(source: Iterable[Event], converted: Iterable[Event], tolerance: Fraction = DEFAULT_TOLERANCE,
                   durations: bool = False) -> EventComparison:
    """Compare two event lists: same pitches, onsets (and with `durations` also durations) within the tolerance."""
    source, converted = list(source), list(converted)
    missing, extra = match_events(source, converted, tolerance, durations)
    matched = len(source) - len(missing)
    largest = max(len(source), len(converted))
    onsets = [source[i][0] for i in missing] + [converted[i][0] for i in extra]
    return EventComparison(
        matched=matched,
        total_source=len(source),
        total_converted=len(converted),
        exact=not missing and not extra,
        ratio=matched / largest if largest else 1.0,
        first_mismatch=min(onsets) if onsets else None,
    )
