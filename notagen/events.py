"""Note events of a MusicXML score and their comparison: the check that a conversion kept the music.

An event is `(onset, MIDI pitch, duration)`, onset and duration in quarter notes as Fractions. Tied notes are
merged into one event, grace notes are left out, every note of a chord is an event, repeats are NOT expanded.
We read the XML with `xml.etree` ourselves (divisions, backup/forward, chord, tie): music21 is far too slow for a
check over a whole corpus. The reference round-trip numbers (ecosystem.md §1.3) compare onsets rounded to 1/24 of a
quarter, because converters store triplets as e.g. 0.332/0.336.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

Event = tuple[Fraction, int, Fraction]

_STEP_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
DEFAULT_TOLERANCE = Fraction(1, 24)


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
    if step not in _STEP_PITCH or octave is None:
        return None
    semitones = round(float(alter)) if alter else 0
    return (int(octave) + 1) * 12 + _STEP_PITCH[step] + semitones


def _duration(element: ET.Element, divisions: Fraction) -> Fraction:
    text = element.findtext("duration")
    if not text:
        return Fraction(0)
    return Fraction(text.strip()) / divisions


def _part_events(measures: Iterable[ET.Element]) -> list[Event]:
    events: list[list] = []           # [onset, pitch, duration], mutable while ties are merged
    open_ties: dict[int, list[int]] = {}  # pitch -> indices of events whose tie is still open
    divisions = Fraction(1)
    measure_start = Fraction(0)
    for measure in measures:
        position = Fraction(0)
        measure_end = Fraction(0)
        last_onset = Fraction(0)
        for element in measure:
            tag = element.tag
            if tag == "attributes":
                text = element.findtext("divisions")
                if text and Fraction(text.strip()) > 0:
                    divisions = Fraction(text.strip())
            elif tag == "backup":
                position -= _duration(element, divisions)
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
                    _add_note(events, open_ties, measure_start + onset, pitch, duration, element)
                if not chord and not grace:
                    position += duration
                    measure_end = max(measure_end, position)
        measure_start += measure_end
    return [(onset, pitch, duration) for onset, pitch, duration in events]


def _add_note(events: list[list], open_ties: dict[int, list[int]], onset: Fraction, pitch: int,
              duration: Fraction, note: ET.Element) -> None:
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
        if "start" not in ties:
            candidates.remove(index)
        return
    events.append([onset, pitch, duration])
    if "start" in ties:
        open_ties.setdefault(pitch, []).append(len(events) - 1)


def musicxml_events(xml_text: str | bytes) -> list[Event]:
    """All note events of a MusicXML document (partwise or timewise), sorted by onset, pitch, duration.

    Raises ValueError when the text is not XML or not a MusicXML score.
    """
    data = xml_text if isinstance(xml_text, bytes) else _XML_DECLARATION.sub("", xml_text, count=1).encode("utf-8")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise ValueError(f"not valid XML: {error}") from error
    events: list[Event] = []
    if root.tag == "score-partwise":
        for part in root.findall("part"):
            events.extend(_part_events(part.findall("measure")))
    elif root.tag == "score-timewise":
        by_part: dict[str, list[ET.Element]] = {}
        for measure in root.findall("measure"):
            for part in measure.findall("part"):
                by_part.setdefault(part.get("id", ""), []).append(part)
        for measures in by_part.values():
            events.extend(_part_events(measures))
    else:
        raise ValueError(f"not a MusicXML score (root element <{root.tag}>)")
    return sorted(events)


def shift_pitches(events: Iterable[Event], semitones: int) -> list[Event]:
    """The same events transposed by `semitones`."""
    return sorted((onset, pitch + semitones, duration) for onset, pitch, duration in events)


@dataclass(frozen=True)
class EventComparison:
    """How well converted events match the source's (multisets of rounded onset, pitch[, duration])."""

    matched: int
    total_source: int
    total_converted: int
    exact: bool
    ratio: float                      # matched / max(total_source, total_converted); 1.0 when both are empty
    first_mismatch: Fraction | None   # earliest (rounded) onset of an unmatched event on either side


def _round(value: Fraction, tolerance: Fraction) -> Fraction:
    return round(value / tolerance) * tolerance


def compare_events(source: Iterable[Event], converted: Iterable[Event], tolerance: Fraction = DEFAULT_TOLERANCE,
                   durations: bool = False) -> EventComparison:
    """Compare two event lists, onsets (and with `durations` also durations) rounded to `tolerance` quarters."""
    tolerance = Fraction(tolerance)

    def key(event: Event) -> tuple:
        onset, pitch, duration = event
        return (_round(onset, tolerance), pitch, _round(duration, tolerance)) if durations else \
            (_round(onset, tolerance), pitch)

    left, right = Counter(map(key, source)), Counter(map(key, converted))
    total_source, total_converted = sum(left.values()), sum(right.values())
    matched = sum((left & right).values())
    unmatched = (left - right) + (right - left)
    largest = max(total_source, total_converted)
    return EventComparison(
        matched=matched,
        total_source=total_source,
        total_converted=total_converted,
        exact=matched == total_source == total_converted,
        ratio=matched / largest if largest else 1.0,
        first_mismatch=min(k[0] for k in unmatched) if unmatched else None,
    )
