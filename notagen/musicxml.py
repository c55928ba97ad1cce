"""MusicXML on its way to ABC: repairs that keep the music, refusals for what ABC cannot carry, features per bar.

`prepare_musicxml` rewrites a partwise (or timewise) score so that xml2abc writes its music faithfully, and says
what it changed that a reader can see. Re-encodings that change nothing audible or visible are made silently: one
`<divisions>` value per part (xml2abc reads one per bar, so a change in the middle of a bar turned quarters into
32nds), whole-number durations, numbered voices (`<voice>X</voice>` crashed it), parts missing from the part list
declared, timewise scores made partwise. Visible repairs are listed in `Prepared.changes`:

* hidden notes (`print-object="no"`) become visible notes (ABC has no hidden notes; xml2abc turned them into
  invisible rests, dropping the music), except a voice hidden in a bar where other voices show notes: that is a
  written-out ornament for playback, and is dropped (and left out of the verification, `Prepared.ignored`);
* a percussion clef over pitched notes becomes a treble clef (abc2xml turns such a voice into unpitched notes);
* a missing `<divisions>` is read as 1 (the MusicXML default);
* ties that no next note of the same pitch continues are dropped, ties to an enharmonic spelling respelled;
* marks xml2abc cannot read are dropped: accidental names such as `natural-sharp` (the pitch is kept), wedge, pedal
  and octave-shift types other than start/stop, tempo marks without a number; unknown key modes are read as major.

What ABC in NotaGen's dialect cannot carry is refused with one line naming the feature, the part and the bar:
unpitched (percussion) notes, microtonal pitches, key signatures of more than seven sharps or flats, and notes shorter
than a 64th (abc2xml rounds them up to a 64th).

`bar_features` lists, per (part, bar), the notation a verification report names when that bar did not survive.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from math import lcm

from notagen.errors import ConversionError, InputError
from notagen.vree import ABC2XML_DIVISIONS, ABC2XML_SHORTEST

# xml2abc's `acc2alt` table: the accidental names it reads; any other name raises KeyError.
_READABLE_ACCIDENTALS = {"double-flat", "flat-flat", "flat", "natural", "sharp", "sharp-sharp", "double-sharp"}
_READABLE_MODES = {"maj", "ion", "m", "min", "aeo", "mix", "dor", "phr", "lyd", "loc", "non"}
_DIRECTION_TYPES = {"down", "up", "crescendo", "diminuendo", "start", "stop"}  # xml2abc raises on any other
_DURATION_PATHS = ("note/duration", "backup/duration", "forward/duration", "figured-bass/duration")
_OFFSET_PATHS = ("direction/offset", "harmony/offset", "figured-bass/offset", "sound/offset")
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")


@dataclass
class Prepared:
    """MusicXML bytes ready for xml2abc and the visible changes made on the way (one line each)."""

    data: bytes
    changes: list[str] = field(default_factory=list)
    ignored: set[tuple[int, int, str]] = field(default_factory=set)   # (part, bar, voice) dropped on purpose


@dataclass
class _Part:
    index: int
    label: str              # "part 2 (Violin II)"
    element: ET.Element
    _measures: list[ET.Element] = field(default_factory=list)

    def measures(self) -> list[ET.Element]:
        if not self._measures:
            self._measures = self.element.findall("measure")
        return self._measures

    def bar(self, index: int) -> str:
        measures = self.measures()
        number = (measures[index].get("number") or "").strip() if index < len(measures) else ""
        return number or str(index + 1)


def parse_score(data: bytes, name: str) -> ET.Element:
    """The root element of MusicXML bytes; InputError when they are not XML."""
    try:
        return ET.fromstring(data)
    except ET.ParseError as error:
        raise InputError(f"{name}: not valid XML: {' '.join(str(error).split())}") from error


def _parts(root: ET.Element) -> list[_Part]:
    names = {sp.get("id", ""): " ".join((sp.findtext("part-name") or "").split())
             for sp in root.iter("score-part")}
    parts = []
    for index, part in enumerate(root.findall("part")):
        name = names.get(part.get("id", ""), "")
        parts.append(_Part(index, f"part {index + 1}" + (f" ({name})" if name else ""), part))
    return parts


def _bars_text(bars: list[str]) -> str:
    unique = list(dict.fromkeys(bars))
    shown = ", ".join(unique[:4]) + (f" and {len(unique) - 4} more" if len(unique) > 4 else "")
    return ("bar " if len(unique) == 1 else "bars ") + shown


def _partwise(root: ET.Element) -> ET.Element:
    """A timewise score as the equivalent partwise score."""
    partwise = ET.Element("score-partwise", root.attrib)
    parts: dict[str, ET.Element] = {}
    for child in root:
        if child.tag != "measure":
            partwise.append(child)
            continue
        for part in child.findall("part"):
            target = parts.get(part.get("id", ""))
            if target is None:
                target = parts[part.get("id", "")] = ET.SubElement(partwise, "part", {"id": part.get("id", "")})
            measure = ET.SubElement(target, "measure", child.attrib)
            measure.extend(list(part))
    return partwise


# ----------------------------------------------------------------------------------------------------- refusals


def _refuse(name: str, feature: str, part: _Part, bar: int, why: str) -> ConversionError:
    return ConversionError(f"{name}: {feature} in {part.label}, bar {part.bar(bar)}: {why}")


def _fraction(text: str | None) -> Fraction | None:
    text = (text or "").strip()
    if text.isdigit():
        return Fraction(int(text))   # the common case, several times faster than parsing the string
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def _check_supported(name: str, parts: list[_Part]) -> None:
    """Raise ConversionError for the first feature ABC in NotaGen's dialect cannot carry."""
    for part in parts:
        divisions = Fraction(1)
        for bar, measure in enumerate(part.measures()):
            for element in measure:
                if element.tag == "attributes":
                    value = _fraction(element.findtext("divisions"))
                    if value:
                        divisions = value
                    for key in element.findall("key"):
                        fifths = _fraction(key.findtext("fifths"))
                        if fifths is not None and abs(fifths) > 7:
                            count = f"{abs(fifths)} {'sharps' if fifths > 0 else 'flats'}"
                            raise _refuse(name, f"a key signature of {count}", part, bar,
                                          "ABC keys have at most 7 sharps or flats")
                if element.tag != "note":
                    continue
                if element.find("unpitched") is not None:
                    raise _refuse(name, "unpitched (percussion) notes", part, bar,
                                  "abc2xml reads a percussion voice back as other notes")
                alter = _fraction(element.findtext("pitch/alter"))
                if alter is not None and alter.denominator != 1:
                    raise _refuse(name, f"a microtonal pitch (alter {float(alter):g})", part, bar,
                                  "ABC has no microtonal accidentals")
                duration = _fraction(element.findtext("duration"))
                kind = "a rest" if element.find("rest") is not None else "a note"
                if element.find("grace") is None and duration and divisions:
                    actual = _fraction(element.findtext("time-modification/actual-notes")) or 1
                    normal = _fraction(element.findtext("time-modification/normal-notes")) or 1
                    written = duration / divisions / 4 * actual / normal   # the written value, in whole notes
                    if written * ABC2XML_SHORTEST < Fraction(9, 10):
                        raise _refuse(name, f"{kind} of 1/{round(1 / written)} (shorter than a 64th)", part, bar,
                                      "abc2xml reads note values down to a 64th")


# ------------------------------------------------------------------------------------------------------ repairs


def _declare_parts(root: ET.Element) -> bool:
    part_list = root.find("part-list")
    if part_list is None:
        part_list = ET.Element("part-list")
        root.insert(0, part_list)
    declared = {sp.get("id") for sp in part_list.iter("score-part")}
    missing = [part.get("id", "") for part in root.findall("part") if part.get("id", "") not in declared]
    for part_id in missing:
        score_part = ET.SubElement(part_list, "score-part", {"id": part_id})
        ET.SubElement(score_part, "part-name").text = ""
    return bool(missing)


def _one_divisions(part: _Part, changes: list[str]) -> bool:
    """Give the part one whole-number `<divisions>` value and whole-number durations (scaled exactly); a part
    without `<divisions>` before its first duration gets the MusicXML default, 1."""
    elements: list[tuple[ET.Element, Fraction]] = []   # (<duration> or <offset>, its value in quarters)
    divisions_elements: list[ET.Element] = []
    values: set[Fraction] = set()
    divisions: Fraction | None = None
    missing = False
    for measure in part.measures():
        for element in measure:
            if element.tag == "attributes":
                value = _fraction(element.findtext("divisions"))
                if value and value > 0:
                    divisions = value
                    values.add(value)
                    divisions_elements.append(element.find("divisions"))
            for path in ("duration", "offset"):
                target = element.find(path)
                amount = _fraction(target.text) if target is not None else None
                if amount is None:
                    continue
                if divisions is None and path == "duration":
                    missing = True
                elements.append((target, amount / (divisions or 1)))
    modified = False
    if not values and not missing:
        return False
    if missing:
        measure = part.measures()[0]
        attributes = measure.find("attributes")
        if attributes is None:
            attributes = ET.Element("attributes")
            measure.insert(0, attributes)
        default = ET.Element("divisions")
        default.text = "1"
        attributes.insert(0, default)
        divisions_elements.insert(0, default)
        values.add(Fraction(1))
        changes.append(f"{part.label} has no <divisions> before its first note: read as 1 per quarter note "
                       "(the MusicXML default)")
        modified = True
    durations = [quarters for element, quarters in elements if element.tag == "duration"]
    single = len(values) == 1 and next(iter(values)).denominator == 1
    if single and all((quarters * next(iter(values))).denominator == 1 for quarters in durations):
        return modified
    target = lcm(*([v.numerator for v in values if v.denominator == 1] + [q.denominator for q in durations] + [1]))
    for element, quarters in elements:
        scaled = quarters * target
        element.text = str(scaled.numerator if scaled.denominator == 1 else round(scaled))
    for element in divisions_elements:
        element.text = str(target)
    return True


def _number_voices(part: _Part) -> bool:
    voices = [v for v in part.element.iter("voice")]
    texts = {(v.text or "").strip() for v in voices}
    numbers = {int(t) for t in texts if t.isdigit()}
    odd = sorted(t for t in texts if not t.isdigit())
    if not odd:
        return False
    start = max(numbers | {0}) + 1
    mapping = {text: str(start + i) for i, text in enumerate(odd)}
    for voice in voices:
        text = (voice.text or "").strip()
        if text in mapping:
            voice.text = mapping[text]
    return True


def _drop_playback_layers(part: _Part, changes: list[str], ignored: set[tuple[int, int, str]]) -> bool:
    """A voice whose notes in a bar are all hidden while another voice shows notes is a layer for playback (a
    trill or turn written out for the sound, next to its printed sign), often in values no notation has: its
    notes become `<forward>`s (the voice keeps its time) and (part, bar, voice) goes into `ignored`, which the
    verification leaves out of the source."""
    bars = []
    for bar, measure in enumerate(part.measures()):
        by_voice: dict[str, list[ET.Element]] = defaultdict(list)
        for note in measure.findall("note"):
            if note.find("rest") is None:
                by_voice[(note.findtext("voice") or "1").strip()].append(note)
        shown = any(n.get("print-object") != "no" for notes in by_voice.values() for n in notes)
        hidden = [voice for voice, notes in by_voice.items() if all(n.get("print-object") == "no" for n in notes)]
        if not shown or not hidden:
            continue
        for voice in hidden:
            for note in by_voice[voice]:
                index = list(measure).index(note)
                measure.remove(note)
                if note.find("chord") is None and note.find("grace") is None and note.find("duration") is not None:
                    forward = ET.Element("forward")
                    forward.append(note.find("duration"))
                    ET.SubElement(forward, "voice").text = voice
                    if note.find("staff") is not None:
                        forward.append(note.find("staff"))
                    measure.insert(index, forward)
            ignored.add((part.index, bar, voice))
        bars.append(part.bar(bar))
    if bars:
        changes.append(f"hidden voices beside shown notes (written-out ornaments for playback) in {part.label}, "
                       f"{_bars_text(bars)}: dropped")
    return bool(bars)


def _show_hidden_notes(part: _Part, changes: list[str]) -> bool:
    bars = []
    for bar, measure in enumerate(part.measures()):
        for note in measure.findall("note"):
            if note.get("print-object") == "no" and note.find("rest") is None:
                del note.attrib["print-object"]
                bars.append(part.bar(bar))
    if bars:
        changes.append(f"hidden notes in {part.label}, {_bars_text(bars)}: written as visible notes (ABC has no "
                       "hidden notes)")
    return bool(bars)


def _drop_unreadable_marks(part: _Part, changes: list[str]) -> bool:
    dropped: dict[str, list[str]] = defaultdict(list)
    for bar, measure in enumerate(part.measures()):
        number = part.bar(bar)
        for note in measure.findall("note"):
            accidental = note.find("accidental")
            if accidental is not None and (accidental.text or "").strip() not in _READABLE_ACCIDENTALS:
                note.remove(accidental)
                dropped[f"'{(accidental.text or '').strip()}' accidental signs (the pitch is kept)"].append(number)
        for direction in measure.findall("direction"):
            for direction_type in direction.findall("direction-type"):
                for tag in ("wedge", "pedal", "octave-shift"):
                    for mark in direction_type.findall(tag):
                        kind = mark.get("type", "")
                        if kind not in _DIRECTION_TYPES:
                            direction_type.remove(mark)
                            dropped[f"{tag} marks of type '{kind}'"].append(number)
                for metronome in direction_type.findall("metronome"):
                    if metronome.find("per-minute") is None:
                        direction_type.remove(metronome)
                        dropped["tempo marks without a number"].append(number)
        for key in measure.findall("attributes/key"):
            mode = key.find("mode")
            if mode is not None and (mode.text or "").strip().lower()[:3] not in _READABLE_MODES:
                dropped[f"key mode '{(mode.text or '').strip()}' (read as major)"].append(number)
                mode.text = "major"
    for what, bars in dropped.items():
        changes.append(f"{what} in {part.label}, {_bars_text(bars)}: dropped (xml2abc cannot read them)")
    return bool(dropped)


_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _spelling(note: ET.Element) -> tuple[str, int, int] | None:
    """(step, octave, alter) of a pitched note, or None."""
    step, octave = (note.findtext("pitch/step") or "").strip(), _fraction(note.findtext("pitch/octave"))
    alter = _fraction(note.findtext("pitch/alter")) or 0
    if step not in _STEPS or octave is None or octave.denominator != 1 or alter.denominator != 1:
        return None
    return step, int(octave), int(alter)


def _midi(spelling: tuple[str, int, int]) -> int:
    step, octave, alter = spelling
    return (octave + 1) * 12 + _STEPS[step] + alter


def _tie_marks(note: ET.Element, kind: str) -> list[tuple[ET.Element, ET.Element]]:
    """(parent, element) of the note's `<tie>` and `<tied>` marks of this type."""
    marks = [(note, tie) for tie in note.findall("tie") if tie.get("type") == kind]
    for notations in note.findall("notations"):
        marks += [(notations, tied) for tied in notations.findall("tied") if tied.get("type") == kind]
    return marks


def _name(spelling: tuple[str, int, int]) -> str:
    step, octave, alter = spelling
    return step + {-2: "bb", -1: "b", 0: "", 1: "#", 2: "##"}.get(alter, f"{alter:+d}") + str(octave)


def _repair_ties(part: _Part, changes: list[str]) -> bool:
    """Ties join a note to the next note of its voice with the same step and octave, in xml2abc's ABC and in
    abc2xml's reading, and the second note takes the first one's accidental. So: a tie whose next note is another
    pitch (C5 tied to C#5, a slip in the source) is dropped, as is a tie that no next note continues (abc2xml would
    tie it to a later note); a tie to an enharmonic spelling (A#4 to Bb4) spells the second note like the first."""
    dropped: list[str] = []
    respelled: list[str] = []
    state: dict[str, list] = {}   # voice -> [ties opened by the previous chord, continued keys, ties opened now]
    bars: dict[int, str] = {}     # id of a tie's first note -> its bar
    for bar, measure in enumerate(part.measures()):
        number = part.bar(bar)
        for note in measure.findall("note"):
            spelling = _spelling(note)
            if spelling is None or note.find("grace") is not None:
                continue
            voice = (note.findtext("voice") or "1").strip()
            previous, continued, opened = state.setdefault(voice, [{}, set(), {}])
            if note.find("chord") is None:   # a new chord in this voice: ties not continued by the last one end
                for key, start in previous.items():
                    if key not in continued:
                        for parent, mark in _tie_marks(start, "start"):
                            parent.remove(mark)
                        dropped.append(bars[id(start)])
                previous, continued, opened = opened, set(), {}
                state[voice] = [previous, continued, opened]
            key = spelling[:2]
            start = previous.get(key)
            if start is None:   # perhaps a tie to another spelling of the same pitch (its stop mark may be missing)
                twin = next((k for k, n in previous.items() if k not in continued
                             and _midi(_spelling(n)) == _midi(spelling)), None)
                if twin is not None:   # enharmonic tie: spell this note like the one it continues
                    start, target = previous[twin], _spelling(previous[twin])
                    pitch = note.find("pitch")
                    for tag in ("step", "alter", "octave"):
                        element = pitch.find(tag)
                        if element is not None:
                            pitch.remove(element)
                    for tag, value in (("step", target[0]), ("alter", target[2]), ("octave", target[1])):
                        ET.SubElement(pitch, tag).text = str(value)
                    accidental = note.find("accidental")
                    if accidental is not None:
                        note.remove(accidental)
                    respelled.append(f"{_name(spelling)} as {_name(target)} in bar {number}")
                    key, spelling = twin, target
            if start is not None:
                continued.add(key)
                if _spelling(start)[2] != spelling[2]:   # same letter, other pitch: not a tie at all
                    for parent, mark in _tie_marks(start, "start") + _tie_marks(note, "stop"):
                        parent.remove(mark)
                    dropped.append(bars[id(start)])
            if _tie_marks(note, "start"):
                opened[key] = note
                bars[id(note)] = number
    if dropped:
        changes.append(f"ties not followed by a note of the same pitch in {part.label}, {_bars_text(dropped)}: dropped")
    if respelled:
        changes.append(f"notes tied to an enharmonic spelling in {part.label}: written {'; '.join(respelled[:3])}")
    return bool(dropped or respelled)


def _pitched_percussion_clefs(part: _Part, changes: list[str]) -> bool:
    bars = []
    for bar, measure in enumerate(part.measures()):
        for clef in measure.findall("attributes/clef"):
            if (clef.findtext("sign") or "").strip() == "percussion":
                for child in list(clef):
                    if child.tag in ("sign", "line", "clef-octave-change"):
                        clef.remove(child)
                ET.SubElement(clef, "sign").text = "G"
                ET.SubElement(clef, "line").text = "2"
                bars.append(part.bar(bar))
    if bars:
        changes.append(f"a percussion clef over pitched notes in {part.label}, {_bars_text(bars)}: written as a "
                       "treble clef (abc2xml reads a percussion voice as unpitched notes)")
    return bool(bars)


def prepare_musicxml(data: bytes, name: str) -> Prepared:
    """MusicXML bytes (partwise or timewise) → bytes xml2abc converts faithfully, with the visible changes made.

    Raises InputError when the bytes are not MusicXML and ConversionError (one line: feature, part, bar, why) for
    music ABC in NotaGen's dialect cannot carry.
    """
    root = parse_score(data, name)
    modified = False
    if root.tag == "score-timewise":
        root, modified = _partwise(root), True
    if root.tag != "score-partwise":
        raise InputError(f"{name}: not a MusicXML score (no <score-partwise> element)")
    changes: list[str] = []
    if _declare_parts(root):
        modified = True
    parts = _parts(root)
    if not any(note.find("rest") is None for note in root.iter("note")):
        raise ConversionError(f"{name}: nothing to convert: it has no notes, only rests")
    _check_supported(name, parts)
    ignored: set[tuple[int, int, str]] = set()
    for part in parts:
        modified |= _one_divisions(part, changes)
        modified |= _drop_playback_layers(part, changes, ignored)
        modified |= _number_voices(part)
        modified |= _show_hidden_notes(part, changes)
        modified |= _drop_unreadable_marks(part, changes)
        modified |= _pitched_percussion_clefs(part, changes)
        modified |= _repair_ties(part, changes)
    if not modified:
        return Prepared(data, changes)
    return Prepared(ET.tostring(root, encoding="utf-8", xml_declaration=True), changes, ignored)


# ------------------------------------------------------------------------------------------------ bar features


def bar_features(xml: str | bytes | ET.Element) -> dict[tuple[int, int], list[str]]:
    """Per (part index, bar index): the notation in that bar a conversion is known to put at risk, in words."""
    if isinstance(xml, ET.Element):
        root = xml
    else:
        data = xml.encode("utf-8") if isinstance(xml, str) else xml
        root = ET.fromstring(_XML_DECLARATION.sub(b"", data, count=1))
    if root.tag == "score-timewise":
        root = _partwise(root)
    features: dict[tuple[int, int], list[str]] = {}
    for part in _parts(root):
        open_ties: dict[tuple[int, ...], tuple[str, str]] = {}   # (octave, step-pitch) -> (voice, step)
        divisions = None
        for bar, measure in enumerate(part.measures()):
            found: list[str] = []
            position, sounding = Fraction(0), False
            voice_end: dict[str, Fraction] = {}
            open_tuplets: dict[str, int] = defaultdict(int)
            keys = measure.findall("attributes/key")
            numbered = {key.get("number") for key in keys if key.get("number")}
            if len(numbered) > 1 and len({key.findtext("fifths") for key in keys}) > 1:
                found.append("different keys on its staves")
            last_grace: dict[str, bool] = {}
            untimed: list[Fraction] = []
            for element in measure:
                if element.tag == "attributes":
                    value = _fraction(element.findtext("divisions"))
                    if value:
                        if divisions is not None and value != divisions and position > 0:
                            found.append("a <divisions> change inside the bar")
                        divisions = value
                    if element.find("key") is not None and position > 0:
                        found.append("a key change inside the bar")
                    if element.find("time") is not None and position > 0:
                        found.append("a time signature change inside the bar")
                    continue
                step = (_fraction(element.findtext("duration")) or 0) / (divisions or 1)
                if element.tag == "backup":
                    if step > position:
                        found.append("a <backup> past the bar's start")
                    position = max(Fraction(0), position - step)
                    continue
                if element.tag == "forward":
                    position += step
                    continue
                if element.tag != "note":
                    continue
                voice = (element.findtext("voice") or "1").strip()
                grace = element.find("grace") is not None
                last_grace[voice] = grace
                if grace:
                    found.append("grace notes")
                if element.get("print-object") == "no" and element.find("rest") is None:
                    found.append("hidden notes")
                starts = [t for t in element.findall("notations/tuplet") if t.get("type") == "start"]
                stops = [t for t in element.findall("notations/tuplet") if t.get("type") == "stop"]
                if len(starts) > 1 or (starts and open_tuplets[voice] > 0):
                    found.append("nested tuplets")
                open_tuplets[voice] += len(starts) - len(stops)
                actual = element.findtext("time-modification/actual-notes")
                normal = element.findtext("time-modification/normal-notes")
                if actual and normal and actual.strip() not in ("2", "3", "4", "5", "6", "7", "9"):
                    found.append(f"a {actual.strip()}:{normal.strip()} tuplet")
                if element.find("notations/ornaments/tremolo[@type='start']") is not None:
                    found.append("a two-note tremolo")
                _tie_features(element, voice, open_ties, found)
                if step and not grace and (step * ABC2XML_DIVISIONS).denominator != 1:
                    untimed.append(step)
                if element.find("chord") is None and not grace:
                    if voice in voice_end and position < voice_end[voice] and element.find("rest") is None:
                        found.append("notes overlapping in one voice")
                    position += step
                    voice_end[voice] = position
                    sounding = True
            if untimed:
                values = ", ".join(str(value) for value in sorted(set(untimed))[:3])
                found.append(f"note values abc2xml cannot time exactly ({values} of a quarter)")
            if any(last_grace.values()):
                found.append("grace notes at the end of the bar (after-graces)")
            if not sounding and measure.find("note") is None:
                found.append("an empty bar")
            if found:
                features[(part.index, bar)] = list(dict.fromkeys(found))
    return features


def _tie_features(note: ET.Element, voice: str, open_ties: dict, found: list[str]) -> None:
    pitch = note.find("pitch")
    if pitch is None:
        return
    step, octave = (pitch.findtext("step") or "").strip(), (pitch.findtext("octave") or "").strip()
    alter = _fraction(pitch.findtext("alter")) or 0
    steps = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
    if step not in steps or not octave.lstrip("-").isdigit():
        return
    midi = (int(octave) + 1) * 12 + steps[step] + int(alter)
    types = {t.get("type") for t in note.findall("tie")} or {t.get("type") for t in note.findall("notations/tied")}
    if "stop" in types and midi in open_ties:
        tied_voice, tied_step = open_ties.pop(midi)
        if tied_voice != voice:
            found.append("a tie across voices")
        if tied_step != step:
            found.append("a tie between differently spelled notes")
    if "start" in types:
        open_ties[midi] = (voice, step)
