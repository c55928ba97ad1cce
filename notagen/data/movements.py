"""What a MusicXML file holds before it is converted: its parts and its movements, and one movement on its own.

A notation program writes a whole multi-movement work (a string quartet) into one file: every part runs through all
movements, and a movement starts where the measure numbers start again (MuseScore's section break "reset measure
numbers") after a final barline, or, where the engraver forgot the reset, at a system that opens with the next
movement's Roman-numeral heading ("IV. Allegro"). `score_outline` finds those starts by scanning the first part's
measures as text (no XML parse, so discovery stays cheap); `extract_movement` cuts one movement out as a complete
MusicXML document, carrying the clefs, key, time and divisions in force at its start into its first measure.
A numbering reset inside a song (a new section) is not a movement: without a final barline before it, or the next
Roman numeral as heading, the file stays one piece.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from notagen.instruments import by_name

_PART = re.compile(r"<part(?:\s[^>]*)?>")
_MEASURE = re.compile(r"<measure(\s[^>]*)?>(.*?)</measure>", re.S)
_MEASURE_SPAN = re.compile(r"<measure(?:\s[^>]*)?>.*?</measure>", re.S)
_ATTRIBUTES = re.compile(r"<attributes(?:\s[^>]*)?>.*?</attributes>", re.S)
_NUMBER = re.compile(r"""\bnumber=["']([^"']*)["']""")
_WORDS = re.compile(r"<words\b[^>]*>([^<]*)</words>")
_FINAL_BARLINE = re.compile(r"""<barline\b[^>]*location=["']right["'][^>]*>\s*<bar-style>light-heavy</bar-style>""")
_NEW_SYSTEM = re.compile(r"""<print\b[^>]*\bnew-(?:page|system)=["']yes["']""")
_SCORE_PART = re.compile(r"<score-part[\s>].*?</score-part>", re.S)
_PART_NAME = re.compile(r"<part-name\b[^>]*>([^<]*)</part-name>")
_SOUND = re.compile(r"<instrument-sound>([^<]*)</instrument-sound>")
_PART_ID = re.compile(r"""\bid=["']([^"']*)["']""")
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")
# MusicXML 3 standard sound ids start with the family: voice.soprano, keyboard.piano, wind.reed.oboe...
_SOUND_FAMILY = {"voice": "voice", "keyboard": "keyboard", "strings": "strings", "wind": "woodwind",
                 "brass": "brass", "pluck": "plucked", "drum": "percussion", "metal": "percussion",
                 "wood": "percussion", "mallet": "percussion"}
# Canonical order of the children of <attributes> (MusicXML 4 schema).
_ATTRIBUTE_ORDER = ("footnote", "level", "divisions", "key", "time", "staves", "part-symbol", "instruments", "clef",
                    "staff-details", "transpose", "for-part", "directive", "measure-style")
_CARRIED = {"divisions", "key", "time", "staves", "part-symbol", "instruments", "clef", "staff-details", "transpose"}


@dataclass(frozen=True)
class Movement:
    """One movement: measures [start, end) of every part (0-based positions, not measure numbers)."""

    number: int
    start: int
    end: int
    heading: str = ""


@dataclass
class Outline:
    parts: list[tuple[str, str]] = field(default_factory=list)   # (part name, family) per part, in score order
    movements: list[Movement] = field(default_factory=list)      # one movement = the whole file

    @property
    def families(self) -> list[str]:
        return [family for _, family in self.parts]


def part_family(name: str, sound: str = "", sung: bool = False) -> str:
    """The instrument family of a part: from its name (the shared instrument table) first, since notation programs
    often leave a default sound on a renamed part, else from its MusicXML sound id; "other" when neither says.

    A part whose notes carry lyrics (`sung`) is a voice unless it is a keyboard: song transcribers sometimes write
    the voice on a "Clarinet in C" or "Violoncello" staff, or call it "Chant" with a default oboe sound."""
    family = "other"
    for line in name.splitlines() or [""]:
        found = by_name(line)
        if found is not None:
            family = found.family
            break
    else:
        if sound:
            family = _SOUND_FAMILY.get(sound.split(".", 1)[0].strip(), "other")
    return "voice" if sung and family != "keyboard" else family


def _heading(body: str) -> str:
    """The first words direction of a measure, one line (a movement heading such as "II. Romanze")."""
    match = _WORDS.search(body)
    return " ".join(match.group(1).split()) if match else ""


def _roman_heading(body: str, numeral: str) -> bool:
    return any(re.match(rf"{numeral}(?:\.|\s|$)", " ".join(text.split())) for text in _WORDS.findall(body))


def score_outline(xml: str) -> Outline:
    """Parts and movements of a partwise MusicXML text (timewise scores and unreadable text: one movement)."""
    outline = Outline()
    head_end = xml.find("</part-list>")
    openings = list(_PART.finditer(xml))
    part_starts = [m.end() for m in openings]
    sung = set()
    for index, opening in enumerate(openings):
        end = openings[index + 1].start() if index + 1 < len(openings) else len(xml)
        if xml.find("<lyric", opening.end(), end) >= 0:
            sung.add(_PART_ID.search(opening.group(0)).group(1) if _PART_ID.search(opening.group(0)) else "")
    for block in _SCORE_PART.findall(xml[: head_end if head_end >= 0 else len(xml)]):
        name_match, sound_match, id_match = _PART_NAME.search(block), _SOUND.search(block), _PART_ID.search(block)
        name = name_match.group(1).strip() if name_match else ""
        family = part_family(name, sound_match.group(1) if sound_match else "",
                             sung=bool(id_match) and id_match.group(1) in sung)
        outline.parts.append((" ".join(name.split()), family))
    if not part_starts or "<score-partwise" not in xml[:4096]:
        return outline
    counts = []
    for index, begin in enumerate(part_starts):
        end = part_starts[index + 1] if index + 1 < len(part_starts) else len(xml)
        counts.append(len(re.findall(r"<measure[\s>]", xml[begin:end])))
    first_end = part_starts[1] if len(part_starts) > 1 else len(xml)
    measures = [(attrs, body) for attrs, body in _MEASURE.findall(xml, part_starts[0], first_end)]
    if len(set(counts)) != 1 or counts[0] != len(measures) or not measures:
        outline.movements = [Movement(1, 0, counts[0] if counts else 0)]
        return outline  # parts of unequal length: positions would not line up, keep the file whole
    starts = [0]
    previous: int | None = None
    for index, (attrs, body) in enumerate(measures):
        number_match = _NUMBER.search(attrs)
        number = int(number_match.group(1)) if number_match and number_match.group(1).isdigit() else None
        if index > 0:
            next_numeral = _ROMAN[len(starts)] if len(starts) < len(_ROMAN) else ""
            heading = bool(next_numeral) and _roman_heading(body, next_numeral)
            restart = number is not None and number <= 1 and previous is not None and previous > 1
            final_before = bool(_FINAL_BARLINE.search(measures[index - 1][1]))
            if (restart and (final_before or heading)) or (heading and _NEW_SYSTEM.search(body)):
                starts.append(index)
        if number is not None:
            previous = number
    bounds = starts + [len(measures)]
    outline.movements = [Movement(n, a, b, _heading(measures[a][1]))
                         for n, (a, b) in enumerate(zip(bounds, bounds[1:]), start=1)]
    return outline


def _attribute_key(element: ET.Element) -> tuple[str, str | None]:
    return element.tag, element.get("number")


def extract_movement(xml: str, start: int, end: int) -> str:
    """A complete MusicXML document holding measures [start, end) of every part, with the attributes in force at
    `start` (divisions, key, time, staves, clefs, transposition) written into its first measure.

    The document is cut as text (a quartet's file is several MB and a whole-tree parse per movement would cost more
    than the cut); only the `<attributes>` before `start` and the movement's first measure are parsed."""
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", xml, count=1)
    opens = list(_PART.finditer(body))
    if not opens or "<score-partwise" not in body[: opens[0].start()]:
        raise ValueError("cannot cut movements out of this score (partwise MusicXML only)")
    pieces: list[str] = []
    cursor = 0  # end of the text copied so far: the header, then each part's closing tag
    for index, opening in enumerate(opens):
        close = body.find("</part>", opening.end())
        if close < 0:
            raise ValueError("unterminated <part>")
        spans = [(m.start(), m.end()) for m in _MEASURE_SPAN.finditer(body, opening.end(), close)]
        if not 0 <= start < end <= len(spans):
            raise ValueError(f"part {index + 1}: measures {start}-{end} out of range (0-{len(spans)})")
        state: dict[tuple[str, str | None], ET.Element] = {}
        for block in _ATTRIBUTES.findall(body, spans[0][0], spans[start][0]):
            for child in ET.fromstring(block):
                if child.tag in _CARRIED:
                    state[_attribute_key(child)] = child
        first = body[spans[start][0]:spans[start][1]]
        if state:
            measure = ET.fromstring(first)
            _merge_attributes(measure, state)
            first = ET.tostring(measure, encoding="unicode")
        pieces += [body[cursor:spans[0][0]], first, body[spans[start][1]:spans[end - 1][1]], "\n"]
        cursor = close
    pieces.append(body[cursor:])
    return "<?xml version='1.0' encoding='utf-8'?>\n" + "".join(pieces)


def _merge_attributes(measure: ET.Element, state: dict[tuple[str, str | None], ET.Element]) -> None:
    """Give the movement's first measure the carried attributes its own <attributes> does not set."""
    children = list(measure)
    first_music = next((i for i, c in enumerate(children) if c.tag in ("note", "backup", "forward")), len(children))
    attributes = next((c for c in children[:first_music] if c.tag == "attributes"), None)
    if attributes is None:
        attributes = ET.Element("attributes")
        leading = 0
        while leading < len(children) and children[leading].tag in ("print", "barline"):
            leading += 1
        measure.insert(leading, attributes)
    own = {_attribute_key(child) for child in attributes}
    # A key/time/clef without a number applies to every staff: a numbered one does not replace it, nor vice versa.
    merged = list(attributes) + [copy.deepcopy(e) for k, e in state.items() if k not in own
                                 and not (k[1] is not None and (k[0], None) in own)]
    rank = {tag: i for i, tag in enumerate(_ATTRIBUTE_ORDER)}
    merged.sort(key=lambda e: rank.get(e.tag, len(rank)))
    for child in list(attributes):
        attributes.remove(child)
    attributes.extend(merged)
