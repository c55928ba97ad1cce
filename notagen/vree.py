"""W. G. Vree's converters as abctoolkit bundles them (xml2abc v143, abc2xml v238), run in-process, with our patches.

Both converters keep state in module globals (xml2abc's `abcOut`, abc2xml's `prevloc` and its `mxm` instance), so
every call resets that state under a lock. The patches below wrap the converters' own methods on the one parser
instance we run (xml2abc) or on the module's `mxm` instance (abc2xml); none copies their code, and each says why:

xml2abc
* Grace groups: v143 opens `{` at a grace note and closes it on the next real note, which may never come (grace
  notes at the end of a voice, after-graces) or come in another voice; it then writes `e4{ga|` and abc2xml reads the
  grace notes as real notes. We close an open group at the end of every bar and when another voice starts grace
  notes.
* Nested tuplets: v143 writes `(3:2:9 B (5:2:5 BBBBB …`, which abc2xml (like ABC 2.1) does not read as nested. We
  write the notes of a nested group as consecutive flat tuplets, each with the combined ratio (`(15:4:5 BBBBB`).
* Key signatures: v143 puts every key change at the start of its bar and applies `<key number="n">` (a staff's own
  key) to every staff. For parts with per-staff keys or key changes in the middle of a bar we write each key as an
  inline `[K:]` in the voices of its staff at the time it happens, and spell each note against its voice's key.
* Wedges, pedals and octave shifts whose stop comes before their start: v143 keeps the stop's time and writes it
  in the bar where the start turns up, as a spacer (`x30!<)!`) that shifts the rest of the voice. We forget a stop
  that waited past the end of its bar (the mark then has no end; the notes keep their times).
* Accidentals after a tie: abc2xml does not let the accidental of the note a tie ends on hold for the rest of
  the bar (`^G4-|^G2 G2` reads G natural), so after such a note the next note of its letter in the bar states its
  accidental (`^G2 ^G2`, or `=G2`), which every reader reads the same way.
* Additive meters (`<beats>3+2</beats>`): v143 crashes on `int('3+2')`; we give it the sum and write `M:3+2/8`
  (abc2xml reads that back as 3+2/8).
* Exceptions: turned into one-line `ConversionError`s naming what xml2abc was converting, the part and the bar.

abc2xml
* Modes: v238 knows major, minor, mixolydian, dorian, phrygian, lydian and locrian but reads `K:Baeo` (what xml2abc
  writes for aeolian) and `K:Cion` as major; we add aeolian and ionian to its tables.
* Timing: v238 times notes in 2520ths of a quarter, so a 64th note (157.5) is cut to 157, as are the notes of 11-,
  13-, 16- or 17-tuplets, and later notes drift; we use a finer grid (`ABC2XML_DIVISIONS`) that times every note
  value abc2xml reads (down to a 64th) in such tuplets exactly.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import threading
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from notagen.errors import ConversionError, InputError

# xml2abc's command-line options as attributes: NotaGen runs `xml2abc.py -d 8 -c 6 -x FILE`.
XML2ABC_OPTIONS = types.SimpleNamespace(u=False, m=0, c=6, d=8, n=0, b=0, o="", v=0, x=True, p=[], j=False,
                                        t=False, s=False, v1=False, ped=True, stm=False, i=False)
# abc2xml's divisions per quarter note (v238: 2520 = 2^3·3^2·5·7): ours also times 64ths of tuplets, and 11-, 13-,
# 16- and 17-tuplets exactly. Its output is reduced by the common divisor afterwards, so scores keep small numbers.
ABC2XML_DIVISIONS = 2**10 * 3**2 * 5 * 7 * 11 * 13 * 17
ABC2XML_SHORTEST = 64      # abc2xml rounds any note value shorter than 1/64 of a whole note to 1/64
_RESTATE = 99   # an alteration no note has: the next note of that letter in the bar writes its accidental
_XML2ABC_LOCK = threading.Lock()
_ABC2XML_LOCK = threading.Lock()

# What xml2abc was doing when it failed, by the name of its innermost function.
_XML2ABC_STEPS = {
    "doNote": "a note", "ntAbc": "a note's pitch", "tabnote": "a tablature note", "doNotations": "a note's notations",
    "matchSlur": "a slur", "doAttr": "the attributes (key, time or clef)", "setKey": "the key signature",
    "doDirection": "a direction (dynamics, wedge, pedal, octave shift, tempo or words)", "startStop": "a direction",
    "doHarmony": "a chord symbol", "doBarline": "a barline", "doPrint": "a layout mark",
    "doPartList": "the part list", "getPartlist": "the part list", "mkHeader": "the part list",
    "addMidiMap": "the part list (a part missing from it?)", "addStaffMap": "the staves", "mkTitle": "the title",
    "doDefaults": "the page layout", "locStaffMap": "the voices and staves", "outVoices": "writing the voices",
    "outVoice": "writing a bar", "insTup": "a tuplet", "sortMeasure": "a bar's timing", "addBar": "a bar",
    "abcdur": "a note value", "doSyllable": "a lyric", "checkMelismas": "a lyric",
}


def one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------------------------
# xml2abc
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Xml2AbcResult:
    """xml2abc's ABC, its log, and which ABC voice (`V:n`) each (part index, MusicXML voice number) became."""

    abc: str
    log: str
    voices: dict[tuple[int, int], int] = field(default_factory=dict)


def _voice_number(parser: Any, note: ET.Element) -> int:
    voice = int(note.findtext("voice", "1"))
    return voice + 100 * int(note.findtext("staff", "1")) if parser.isSib else voice


def _close_grace_group(parser: Any) -> None:
    if parser.ingrace and parser.msc.lastnote is not None:
        parser.msc.lastnote.after += "}"
    parser.ingrace = 0


def _key_changes_of(part: ET.Element) -> tuple[bool, bool]:
    """(per-staff keys, key changes after the start of a bar) in a part."""
    per_staff = part.find("measure/attributes/key[@number]") is not None
    for measure in part.findall("measure"):
        position = 0
        for element in measure:
            if element.tag == "note" and element.find("chord") is None and element.find("grace") is None:
                position += int(element.findtext("duration") or 0)
            elif element.tag == "forward":
                position += int(element.findtext("duration") or 0)
            elif element.tag == "backup":
                position = max(0, position - int(element.findtext("duration") or 0))
            elif element.tag == "attributes" and element.find("key") is not None and position > 0:
                return per_staff, True
    return per_staff, False


class _ParserPatches:
    """The per-instance wrappers around one xml2abc Parser (see the module docstring)."""

    def __init__(self, module: Any, parser: Any, writer: Any) -> None:
        self.module, self.parser, self.writer = module, parser, writer
        self.part = -1
        self.voices: dict[tuple[int, int], int] = {}
        self.grace_voice: int | None = None
        self.own_keys = False
        self.key_timeline: dict[int, list[tuple[tuple[int, int], dict]]] = {}
        self.tied_into: dict[int, set[tuple[str, int]]] = {}   # voice -> (step, octave) its current chord's ties end on
        self.tying: dict[int, set[tuple[str, int]]] = {}       # voice -> (step, octave) tied from its current chord
        self.stop_bars: dict[str, tuple[int, int]] = {}   # direction key -> (part, bar) of a stop before its start
        originals = {name: getattr(parser, name) for name in ("doNote", "doAttr", "ntAbc", "locStaffMap",
                                                                "addStaffMap", "doDirection")}
        self.original = originals
        music_add_bar = parser.msc.addBar
        parser.doNote = self.do_note
        parser.doAttr = self.do_attr
        parser.ntAbc = self.nt_abc
        parser.locStaffMap = self.loc_staff_map
        parser.addStaffMap = self.add_staff_map
        parser.doDirection = self.do_direction

        def add_bar(lbrk: Any, measure: Any) -> None:
            _close_grace_group(parser)
            music_add_bar(lbrk, measure)

        parser.msc.addBar = add_bar

    # -- parts and voices
    def loc_staff_map(self, part: ET.Element, measures: Any) -> None:
        self.part += 1
        self.original["locStaffMap"](part, measures)
        per_staff, mid_bar = _key_changes_of(part)
        self.own_keys = per_staff or mid_bar
        self.key_timeline = {}
        self.grace_voice = None

    def add_staff_map(self, vvmap: dict[int, int]) -> None:
        for xml_voice, abc_voice in vvmap.items():
            self.voices[(self.part, xml_voice)] = abc_voice
        self.original["addStaffMap"](vvmap)

    # -- directions
    def do_direction(self, element: ET.Element, index: int, elements: list) -> None:
        pending, now = self.parser.dirStk, (self.part, self.parser.msr.ixm)
        for key in [k for k, bar in self.stop_bars.items() if bar != now]:
            if pending.get(key, (None,))[0] == "stop":
                del pending[key]          # a stale stop would be written at its old time in this bar
            del self.stop_bars[key]
        self.original["doDirection"](element, index, elements)
        for key, (kind, _time) in pending.items():
            if kind == "stop" and key not in self.stop_bars:
                self.stop_bars[key] = now

    # -- grace groups, ties
    def do_note(self, note: ET.Element) -> None:
        grace = note.find("grace") is not None
        voice = _voice_number(self.parser, note)
        if grace:
            if self.parser.ingrace and voice != self.grace_voice:
                _close_grace_group(self.parser)   # another voice's grace notes: the open group ends here
            self.grace_voice = voice
        elif note.find("chord") is None:   # a new chord: the ties of the previous one end on it
            self.tied_into[voice] = self.tying.pop(voice, set())
        self.original["doNote"](note)

    # -- keys and meters
    def do_attr(self, attributes: ET.Element) -> None:
        keys = attributes.findall("key") if self.own_keys else []
        beats = (attributes.findtext("time/beats") or "").replace(" ", "")
        additive = "+" in beats
        if not keys and not additive:
            self.original["doAttr"](attributes)
            return
        element = copy.deepcopy(attributes)
        for key in element.findall("key"):
            if keys:
                element.remove(key)
        total = ""
        if additive:
            try:
                total = str(sum(int(part) for part in beats.split("+")))
            except ValueError:
                total = ""   # not a sum of whole numbers: let xml2abc report it
            if total:
                element.find("time/beats").text = total
        self.original["doAttr"](element)
        if total:
            unit = (attributes.findtext("time/beat-type") or "").strip()
            plain, written = f"{total}/{unit}", f"{beats}/{unit}"
            if self.writer.mtr == plain and self.parser.msr.ixm == 0 and self.parser.msc.tijd == 0:
                self.writer.mtr = written
            self.parser.msr.attr = self.parser.msr.attr.replace(f"[M:{plain}]", f"[M:{written}]")
        if keys:
            self._keys(keys, transposing=attributes.find("transpose") is not None)

    def _keys(self, keys: list[ET.Element], transposing: bool) -> None:
        parser, music = self.parser, self.parser.msc
        now = (parser.msr.ixm, music.tijd)
        staves = sorted(parser.stfMap) or [1]
        if not self.key_timeline:   # first key handled here: start every staff from the current key
            self.key_timeline = {staff: [((-1, 0), dict(parser.msralts))] for staff in staves}
        for key in keys:
            fifths = key.findtext("fifths")
            if fifths is None:
                continue   # a non-traditional key (key-step/key-alter): xml2abc spells such notes explicitly
            name, alterations = self.module.setKey(int(fifths), key.findtext("mode", "major"))
            targets = [int(key.get("number"))] if key.get("number") else staves
            for staff in targets:
                self.key_timeline.setdefault(staff, []).append((now, alterations))
                first_bar = parser.msr.ixm == 0 and music.tijd == 0
                if first_bar and staff == staves[0] and self.writer.key == "none" and not transposing:
                    self.writer.key = name     # the tune's K: line, as xml2abc writes it
                    continue
                if first_bar and name == self.writer.key:
                    continue
                for voice in parser.stfMap.get(staff, []):
                    if music.tijd == 0:
                        music.insertElem(voice, f"[K:{name}]")
                    else:
                        music.appendElemT(voice, f"[K:{name}]", music.tijd)
            parser.msralts = alterations

    def nt_abc(self, step: str, octave: int, note: ET.Element, voice: int, record: Any, is_tab: bool) -> str:
        if self.own_keys and self.key_timeline:
            # A voice is written in the key of its home staff (abc2xml applies a voice's K: to all its notes).
            timeline = self.key_timeline.get(self.parser.vce2stf.get(voice), [])
            now = (self.parser.msr.ixm, self.parser.msc.tijd)
            current = [alterations for when, alterations in timeline if when <= now]
            if current:
                self.parser.msralts = current[-1]
        written = self.original["ntAbc"](step, octave, note, voice, record, is_tab)
        if note.find("grace") is None:
            if (step, octave) in self.tied_into.get(voice, ()):
                # abc2xml does not let the accidental of a note a tie ends on hold for the rest of the bar
                # (`^G4-|^G2 G2` gives G natural): make the next note of this letter state its own accidental.
                self.parser.curalts[(written.lstrip("^_="), voice)] = _RESTATE
            if {tie.get("type") for tie in note.findall("tie") + note.findall("notations/tied")} & {"start"}:
                self.tying.setdefault(voice, set()).add((step, octave))
        return written


def _group_end(index: int, notes: list, module: Any) -> int:
    """Index of the last note of the tuplet group that starts at `index` (outermost start/stop, as insTup reads)."""
    depth, last = 0, index
    bracketed = "start" in notes[index].tup
    for position in range(index, len(notes)):
        note = notes[position]
        if isinstance(note, module.Elem) or note.grace:
            continue
        if not note.fact:
            return last
        last = position
        if bracketed:
            depth += note.tup.count("start") - note.tup.count("stop")
            if depth <= 0:
                return position
    return last


def _make_ins_tup(module: Any) -> Any:
    original = module.insTup

    def ins_tup(index: int, notes: list, fact: tuple[int, int]) -> tuple[int, int]:
        end = _group_end(index, notes, module)
        members = [n for n in notes[index:end + 1] if not isinstance(n, module.Elem) and not n.grace]
        nested = len({n.fact for n in members if n.fact}) > 1 or members[0].tup.count("start") > 1 or \
            any("start" in n.tup for n in members[1:])   # also a bracket opened inside an unbracketed run
        if fact != (1, 1) or not nested:
            return original(index, notes, fact)   # one plain tuplet: v143's own output, unchanged
        # Consecutive notes with the same combined ratio form one flat tuplet; a bracket's start or end also
        # ends a run, so the flat tuplets follow the printed ones.
        count = 0
        runs: list[list] = []
        closed = True
        for note in members:
            opens, ends = "start" in note.tup, "stop" in note.tup
            note.tup = [mark for mark in note.tup if mark not in ("start", "stop")]
            if runs and not closed and not opens and runs[-1][0].fact == note.fact:
                runs[-1].append(note)
            else:
                runs.append([note])
            closed = ends
        for run in runs:
            actual, normal = run[0].fact
            prefix = "(3" if (actual, normal, len(run)) == (3, 2, 3) else f"({actual}:{normal}:{len(run)}"
            run[0].tupabc = prefix + run[0].tupabc
            count += len(run)
        return end, count

    return ins_tup


def _xml2abc_failure(name: str, data: bytes, parser: Any, error: BaseException) -> ConversionError:
    """A one-line ConversionError: what xml2abc was converting, in which part and bar, and its exception."""
    step = "the score"
    trace = error.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        if code.co_filename.endswith("xml2abc.py") and code.co_name in _XML2ABC_STEPS:
            step = _XML2ABC_STEPS[code.co_name]
        trace = trace.tb_next
    where = ""
    measure = getattr(parser, "msr", None)
    if measure is not None:
        part_index, bar_index = measure.ixp, measure.ixm
        part_name, number = f"part {part_index + 1}", str(bar_index + 1)
        with contextlib.suppress(ET.ParseError, IndexError, TypeError):
            root = ET.fromstring(data)
            parts = root.findall("part")
            if part_index < len(parts):
                part_id = parts[part_index].get("id", "")
                listed = root.find(f"part-list/score-part[@id='{part_id}']") if part_id.isidentifier() else None
                label = one_line(listed.findtext("part-name") or "") if listed is not None else ""
                part_name = f"part {part_index + 1}" + (f" ({label})" if label else "")
                measures = parts[part_index].findall("measure")
                if bar_index < len(measures):
                    number = measures[bar_index].get("number") or number
        where = f" in {part_name}, bar {number}"
    return ConversionError(f"{name}: xml2abc cannot convert {step}{where}: {type(error).__name__}: "
                           f"{one_line(error)[:160]}")


def run_xml2abc(data: bytes, name: str) -> Xml2AbcResult:
    """xml2abc (`-d 8 -c 6 -x`, patched as above) on partwise MusicXML bytes. Raises InputError for XML that does
    not parse and ConversionError when xml2abc fails or writes nothing."""
    from abctoolkit import xml2abc

    output, log = io.StringIO(), io.StringIO()
    with _XML2ABC_LOCK, contextlib.redirect_stderr(log):
        writer = xml2abc.ABCoutput(name + ".abc", "", 0, XML2ABC_OPTIONS)
        writer.outfile = output
        previous_out, previous_ins_tup = getattr(xml2abc, "abcOut", None), xml2abc.insTup
        xml2abc.abcOut = writer  # xml2abc's Parser writes through this module global
        xml2abc.insTup = _make_ins_tup(xml2abc)
        parser = xml2abc.Parser(XML2ABC_OPTIONS)
        patches = _ParserPatches(xml2abc, parser, writer)
        try:
            parser.parse(io.BytesIO(data))
        except ET.ParseError as error:
            raise InputError(f"{name}: not valid XML: {one_line(error)}") from error
        except Exception as error:  # xml2abc fails with arbitrary errors (KeyError, TypeError…) on odd files
            raise _xml2abc_failure(name, data, parser, error) from error
        finally:
            xml2abc.abcOut, xml2abc.insTup = previous_out, previous_ins_tup
    abc = output.getvalue()
    if not abc.strip():
        reason = "it has no notes, only rests" if "has no notes" in log.getvalue() else \
            (one_line(log.getvalue()).lstrip("- ") or "no output")
        raise ConversionError(f"{name}: nothing to convert: {reason}")
    return Xml2AbcResult(abc=abc, log=log.getvalue(), voices=patches.voices)


# ---------------------------------------------------------------------------------------------------------------
# abc2xml
# ---------------------------------------------------------------------------------------------------------------

# abc2xml messages that mean it changed the music it read (the rest are notes on layout or unsupported symbols;
# "tie between different pitches: converted to slur" keeps both notes as written, so it is not one of these).
_ABC2XML_LOSSY = re.compile(r"duration too small|illegal duration|not recognized, 4/4 assumed|error in M:|"
                            r"is not allowed, 1/8 assumed|illegal unit length|error in broken rhythm")


def _patch_abc2xml(module: Any) -> None:
    instance = module.mxm
    if getattr(instance, "_notagen_patched", False):
        return
    instance.offTab = {**type(instance).offTab, "aeo": 11, "ion": 8}
    instance.modTab = {**type(instance).modTab, "aeo": "aeolian", "ion": "ionian"}
    original_reset = instance.reset

    def reset(fOpt: bool = False) -> None:  # noqa: N803 - abc2xml's own parameter name
        original_reset(fOpt)
        instance.divisions = ABC2XML_DIVISIONS

    instance.reset = reset
    instance._notagen_patched = True


@dataclass
class Abc2XmlResult:
    """abc2xml's score element and the messages that say it changed the music it read (one line each)."""

    score: ET.Element
    lossy: list[str]


def run_abc2xml(abc_text: str) -> Abc2XmlResult:
    """abc2xml (patched as above) on one tune, in-process, durations normalised as its getXmlDocs does. Raises
    ConversionError with abc2xml's own message when it cannot read the text."""
    from functools import reduce
    from math import gcd

    from abctoolkit import abc2xml
    from pyparsing import ParseException

    log = io.StringIO()
    with _ABC2XML_LOCK, contextlib.redirect_stderr(log):
        _patch_abc2xml(abc2xml)
        abc2xml.prevloc = 0  # beam-break detection state left over from the previous call
        try:
            score = abc2xml.mxm.parse(abc_text, False, False, False)
        except ParseException as error:
            lines = [line.strip() for line in log.getvalue().splitlines() if line.strip()]
            reason = lines[-1] if lines else str(error)
            raise ConversionError(f"abc2xml cannot parse the ABC: {one_line(reason)} "
                                  f"(line {error.lineno}: {one_line(error.line)[:60]})") from error
        except Exception as error:  # abc2xml fails with arbitrary errors on malformed music
            raise ConversionError(f"abc2xml failed: {type(error).__name__}: {one_line(error)[:160]}") from error
    # Divide all durations and divisions by their common divisor (getXmlDocs divides by the one they share with 21,
    # which with our divisions would leave tens of millions per quarter).
    durations = list(score.iter("duration"))
    values = [int(element.text) for element in durations]
    divisor = reduce(gcd, values + [int(element.text) for element in score.iter("divisions")])
    for element, value in zip(durations, values):
        element.text = str(value // divisor)
    for element in score.iter("divisions"):
        element.text = str(int(element.text) // divisor)
    lossy = list(dict.fromkeys(one_line(line).lstrip("- ") for line in log.getvalue().splitlines()
                               if _ABC2XML_LOSSY.search(line)))
    return Abc2XmlResult(score=score, lossy=lossy)
