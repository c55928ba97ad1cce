"""Did a conversion keep the music? The note events of the source against those of the conversion read back, and
what changed, in words: which voice, which bar, which notes, and the notation in that bar known to be at risk.

`compare_scores` is the one verification `notagen convert` and `notagen data build` run (through
`notagen.convert.verify_abc`): every note of the source must come back with the same pitch, onset and duration
(within 1/48 of a quarter), and nothing may be added.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from notagen.events import DEFAULT_TOLERANCE, ScoreEvents, match_events, parse_xml, read_events
from notagen.musicxml import bar_features

_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_VALUES = {Fraction(4): "whole", Fraction(2): "half", Fraction(1): "quarter", Fraction(1, 2): "eighth",
           Fraction(1, 4): "16th", Fraction(1, 8): "32nd", Fraction(1, 16): "64th"}


def pitch_name(midi: int) -> str:
    return f"{_NAMES[midi % 12]}{midi // 12 - 1}"


def value_name(quarters: Fraction) -> str:
    """A duration in quarters in words: `a quarter`, `an eighth`, `a dotted half`, `5/2 quarters`, `1/3 of a
    quarter`."""
    if quarters in _VALUES:
        name = _VALUES[quarters]
    elif quarters * 2 / 3 in _VALUES:
        name = "dotted " + _VALUES[quarters * 2 / 3]
    else:
        return f"{quarters} quarters" if quarters > 1 else f"{quarters} of a quarter"
    return ("an " if name[0] in "e" else "a ") + name


def _beat(offset: Fraction) -> str:
    return f"{float(offset + 1):g}"


@dataclass(frozen=True)
class Difference:
    """One note that did not survive: `part`/`bar` are 0-based indices into the source (part -1: unknown)."""

    part: int
    bar: int
    text: str


@dataclass
class Verification:
    """The outcome of comparing a conversion with its source."""

    exact: bool
    matched: int
    total_source: int
    total_converted: int
    differences: list[Difference] = field(default_factory=list)   # in bar order
    first_bar: str | None = None        # "bar 4 of part 1 (Flute), voice 1 (V:1)"
    features: list[str] = field(default_factory=list)   # what is at risk in that bar
    warnings: list[str] = field(default_factory=list)   # from reading the source (clamped <backup>s)

    def summary(self) -> str:
        """One line: what changed, where first, and the notation there."""
        if self.exact:
            return f"verified: all {self.total_source} notes kept"
        bars = len({(d.part, d.bar) for d in self.differences})
        lost = self.total_source - self.matched
        added = self.total_converted - self.matched
        counts = " and ".join(part for part in (f"{lost} of {self.total_source} notes not kept" if lost else "",
                                                 f"{added} not in the source" if added else "") if part)
        first = [d.text for d in self.differences if (d.part, d.bar) == (self.differences[0].part,
                                                                             self.differences[0].bar)]
        shown = "; ".join(first[:3]) + (f"; {len(first) - 3} more" if len(first) > 3 else "")
        at_risk = ("; the bar has " + ", ".join(self.features)) if self.features else \
            "; no notation known to be at risk in that bar"
        return (f"the conversion changes the music: {counts} in {bars} bar{'s' if bars != 1 else ''}; first in "
                f"{self.first_bar}: {shown}{at_risk}")


def _where_text(source: ScoreEvents, part: int, bar: int, voice: str | None,
                voices: dict[tuple[int, int], int] | None) -> str:
    if 0 <= part < len(source.part_names):
        numbers = source.bar_numbers[part]
        number = numbers[bar] if bar < len(numbers) else str(bar + 1)
        name = source.part_names[part]
        text = f"bar {number} of part {part + 1}" + (f" ({name})" if name else "")
    else:
        number = source.bar_numbers[0][bar] if source.bar_numbers and bar < len(source.bar_numbers[0]) else \
            str(bar + 1)
        text = f"bar {number}"
    if voice is not None:
        text += f", voice {voice}"
        abc_voice = (voices or {}).get((part, int(voice))) if voice.isdigit() else None
        if abc_voice is not None:
            text += f" (V:{abc_voice})"
    return text


def compare_scores(source_xml: str | bytes | ET.Element, converted_xml: str | bytes | ET.Element,
                   voices: dict[tuple[int, int], int] | None = None,
                   ignored: set[tuple[int, int, str]] | None = None,
                   tolerance: Fraction = DEFAULT_TOLERANCE) -> Verification:
    """Compare a source score with a conversion read back, both MusicXML.

    `voices` maps (source part index, MusicXML voice number) to the ABC voice it became, to name it in the report;
    `ignored` lists the (part, bar, voice) of source notes the conversion dropped on purpose (hidden playback
    layers). Raises ValueError when either side is not a MusicXML score.
    """
    root = source_xml if isinstance(source_xml, ET.Element) else parse_xml(source_xml)
    source = read_events(root)
    if ignored:
        kept = [i for i, where in enumerate(source.where) if (where.part, where.bar, where.voice) not in ignored]
        source.events, source.where = [source.events[i] for i in kept], [source.where[i] for i in kept]
    converted = read_events(converted_xml)
    missing, extra = match_events(source.events, converted.events, tolerance, durations=True)
    total = len(source.events)
    result = Verification(exact=not missing and not extra, matched=total - len(missing), total_source=total,
                          total_converted=len(converted.events), warnings=list(source.warnings))
    if result.exact:
        return result
    result.differences = _differences(source, converted, missing, extra, tolerance)
    first = result.differences[0]
    first_voice = next((source.where[i].voice for i in missing
                        if (source.where[i].part, source.where[i].bar) == (first.part, first.bar)), None)
    result.first_bar = _where_text(source, first.part, first.bar, first_voice, voices)
    features = bar_features(root)
    if first.part >= 0:
        result.features = list(features.get((first.part, first.bar), []))
    else:
        result.features = list(dict.fromkeys(found for (_, bar), names in sorted(features.items())
                                             if bar == first.bar for found in names))
    if any(source.where[i].tied_across_voices and source.where[i].bar == first.bar for i in missing) and \
            "a tie across voices" not in result.features:
        result.features.insert(0, "a tie across voices")
    return result


class _Note(NamedTuple):
    onset: Fraction
    pitch: int
    duration: Fraction
    offset: Fraction      # from the bar's start
    part: int             # source part index (for a note of the conversion: its part's, when parts match; else -1)


def _changed(kind: str, a: _Note, b: _Note, window: Fraction) -> str:
    """How source note `a` became converted note `b` if that is a change of this kind (`duration`: same pitch and
    onset; `moved`: same pitch and duration; `pitch`: same onset and duration), else ""."""
    same_onset, same_duration = abs(a.onset - b.onset) <= window, abs(a.duration - b.duration) <= window
    if kind == "duration" and a.pitch == b.pitch and same_onset:
        return f"{pitch_name(a.pitch)} at beat {_beat(a.offset)} lasts {value_name(b.duration)} instead of " \
               f"{value_name(a.duration)}"
    if kind == "moved" and a.pitch == b.pitch and same_duration:
        shift = f"{float(b.onset - a.onset):+.4g} quarters"
        if _beat(a.offset) == _beat(b.offset):
            return f"{pitch_name(a.pitch)} ({value_name(a.duration)}) at beat {_beat(a.offset)} moved by {shift}"
        far = "" if abs(a.onset - b.onset) < 4 else f" ({shift})"
        return f"{pitch_name(a.pitch)} ({value_name(a.duration)}) moved from beat {_beat(a.offset)} to " \
               f"{_beat(b.offset)}{far}"
    if kind == "pitch" and same_onset and same_duration:
        return f"{pitch_name(a.pitch)} at beat {_beat(a.offset)} became {pitch_name(b.pitch)}"
    return ""


def _differences(source: ScoreEvents, converted: ScoreEvents, missing: list[int], extra: list[int],
                 tolerance: Fraction) -> list[Difference]:
    """Pair the unmatched notes of each bar (same pitch and onset: duration changed; same pitch and duration:
    moved; same onset and duration: pitch changed) and describe each change in words, in bar order."""
    window = Fraction(tolerance) / 2
    lost: dict[int, list[_Note]] = defaultdict(list)
    added: dict[int, list[_Note]] = defaultdict(list)
    for i in missing:
        where = source.where[i]
        lost[where.bar].append(_Note(*source.events[i], where.offset, where.part))
    same_parts = len(converted.part_names) == len(source.part_names)   # abc2xml writes a part per source part
    for j in extra:
        where = converted.where[j]
        added[where.bar].append(_Note(*converted.events[j], where.offset, where.part if same_parts else -1))
    differences: list[Difference] = []
    for bar in sorted(set(lost) | set(added)):
        left, right = list(lost.get(bar, [])), list(added.get(bar, []))
        part = min((note.part for note in left), default=min((note.part for note in right), default=-1))
        lines: list[tuple[Fraction, str]] = []
        for kind in ("duration", "moved", "pitch"):
            for a in list(left):
                for b in right:
                    text = _changed(kind, a, b, window)
                    if text:
                        lines.append((a.onset, text))
                        left.remove(a)
                        right.remove(b)
                        break
        lines += [(a.onset, f"{pitch_name(a.pitch)} ({value_name(a.duration)}) at beat {_beat(a.offset)} is missing")
                  for a in left]
        lines += [(b.onset, f"an extra {pitch_name(b.pitch)} ({value_name(b.duration)}) at beat {_beat(b.offset)}")
                  for b in right]
        differences += [Difference(part, bar, text) for _, text in sorted(lines)]
    return differences
