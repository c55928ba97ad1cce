"""Score format conversion, one entry point per direction, all in-process.

* `score_to_abc(path)`: MusicXML (`.xml`, `.musicxml`, `.mxl`), Humdrum (`.krn`) or ABC → cleaned standard ABC in
  NotaGen's dialect, made by W. G. Vree's xml2abc (v143, bundled in abctoolkit) with the reference options
  `-d 8 -c 6 -x`, called as a library (no subprocess per file).
* `score_to_musicxml(path)`: the MusicXML text that ABC was made from (what a verifier compares against).
* `abc_to_musicxml(text)`: standard or interleaved ABC (also rest-reduced, with `[r:]` or prompt lines) → MusicXML
  via Vree's abc2xml, the only reader that understands interleaved multi-voice ABC (ecosystem.md §1.4).
* `convert_command`: `notagen convert IN OUT`.

Workarounds for known converter failures (ecosystem.md §6): `.mxl` archives whose root file is `*.musicxml` are
unpacked here through `META-INF/container.xml` (xml2abc only looks for `*.xml`); non-numeric lyric numbers
(`number="chorus"`, Sibelius exports) are renumbered before xml2abc sees them. Both converters keep state in module
globals (xml2abc's `abcOut`, abc2xml's `prevloc`), so every call resets that state under a lock.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import types
import xml.etree.ElementTree as ET
import zipfile
import zlib
from functools import reduce
from math import gcd
from pathlib import Path
from typing import Literal

from notagen.abc.interleave import interleave, is_interleaved, is_rest_reduced, rest_unreduce
from notagen.abc.text import clean_abc, strip_prompt_lines, strip_stream_annotations
from notagen.errors import ConversionError, InputError
from notagen.io import atomic_write_bytes, atomic_write_text

Format = Literal["musicxml", "mxl", "kern", "abc", "midi"]

_EXTENSIONS: dict[str, Format] = {".xml": "musicxml", ".musicxml": "musicxml", ".mxl": "mxl", ".krn": "kern",
                                  ".kern": "kern", ".abc": "abc", ".mid": "midi", ".midi": "midi"}
# xml2abc's command-line options as attributes: NotaGen runs `xml2abc.py -d 8 -c 6 -x FILE`.
_XML2ABC_OPTIONS = types.SimpleNamespace(u=False, m=0, c=6, d=8, n=0, b=0, o="", v=0, x=True, p=[], j=False,
                                         t=False, s=False, v1=False, ped=True, stm=False, i=False)
_XML2ABC_LOCK = threading.Lock()
_ABC2XML_LOCK = threading.Lock()
_TUNE_START = re.compile(r"^X:[ \t]*(\d*)", re.MULTILINE)
_LYRIC_NUMBER = re.compile(rb"(<lyric\b[^>]*?\bnumber\s*=\s*)([\"'])([^\"']*)\2")
_BAR_END = re.compile(r"(\||::|\\)\s*$")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------------------------
# Reading inputs
# ---------------------------------------------------------------------------------------------------------------

def detect_format(path: Path | str) -> Format:
    """The score format of a file, from its extension, else by sniffing its first bytes."""
    path = Path(path)
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if by_extension:
        return by_extension
    head = _read_bytes(path)[:4096]
    if head.startswith(b"PK"):
        return "mxl"
    if head.startswith(b"MThd"):
        return "midi"
    text = head.decode("latin-1").lstrip("\ufeff\xef\xbb\xbf \t\r\n")
    if text.startswith("<") and ("score-partwise" in text or "score-timewise" in text or "<?xml" in text):
        return "musicxml"
    if re.search(r"^\*\*kern|^!!!", text, re.MULTILINE):
        return "kern"
    if re.search(r"^(X|K|M|L):", text, re.MULTILINE):
        return "abc"
    raise InputError(f"{path}: cannot tell the score format (use .xml, .musicxml, .mxl, .krn or .abc)")


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a score file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: unreadable: {error.strerror or error}") from error
    if not data.strip():
        raise InputError(f"{path}: empty file")
    return data


def _check_text(path: Path, data: bytes, kind: str) -> None:
    if b"\x00" in data[:65536]:
        raise InputError(f"{path}: binary file, not a {kind} score")


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_mxl(path: Path | str) -> bytes:
    """The MusicXML bytes of the root file of a compressed `.mxl` archive (found via META-INF/container.xml)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            root = None
            if "META-INF/container.xml" in names:
                container = ET.fromstring(archive.read("META-INF/container.xml"))
                for element in container.iter():
                    full_path = element.get("full-path")
                    if element.tag.endswith("rootfile") and full_path and full_path in names \
                            and full_path.lower().endswith((".xml", ".musicxml")):
                        root = full_path
                        break
            if root is None:
                candidates = [name for name in names if not name.startswith("META-INF")
                              and name.lower().endswith((".xml", ".musicxml"))]
                if not candidates:
                    raise InputError(f"{path}: .mxl archive holds no MusicXML file")
                root = candidates[0]
            return archive.read(root)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, KeyError, ET.ParseError) as error:
        raise InputError(f"{path}: corrupt .mxl archive: {_one_line(error)}") from error


def _utf8_xml(data: bytes) -> bytes:
    """UTF-16 MusicXML (some corpus files) as UTF-8, so byte-level checks and fixes can read it."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:4] in (b"<\x00?\x00", b"\x00<\x00?"):
        text = data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else
                           ("utf-16-le" if data[0] == 0x3C else "utf-16-be"))
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "<?xml version='1.0' encoding='utf-8'?>", text.lstrip("\ufeff"),
                      count=1)
        return text.encode("utf-8")
    return data


def _sanitize_lyric_numbers(data: bytes) -> bytes:
    """Renumber non-numeric `<lyric number="…">` values (xml2abc v143 crashes on them; lyrics are dropped later)."""
    if b"<lyric" not in data:
        return data
    values = [match.group(3) for match in _LYRIC_NUMBER.finditer(data)]

    def numeric(value: bytes) -> bool:
        return re.fullmatch(rb"\d+", re.sub(rb"^.*verse", b"", value)) is not None

    bad = [value for value in dict.fromkeys(values) if not numeric(value)]
    if not bad:
        return data
    highest = max([int(re.sub(rb"^.*verse", b"", v)) for v in values if numeric(v)] + [0])
    mapping = {value: str(highest + 1 + index).encode() for index, value in enumerate(bad)}

    def fix(match: re.Match[bytes]) -> bytes:
        value = match.group(3)
        if value not in mapping:
            return match.group(0)
        return match.group(1) + match.group(2) + mapping[value] + match.group(2)

    return _LYRIC_NUMBER.sub(fix, data)


def abc_tune_texts(text: str) -> list[str]:
    """The tunes of an ABC file, each with the file's header directives in front (1-based `tune` numbers index
    this list; the numbering matches `notagen.data.sources`: tunes start at `X:` lines)."""
    starts = [match.start() for match in _TUNE_START.finditer(text)]
    if not starts:
        return [text] if text.strip() else []
    header = "".join(line + "\n" for line in text[: starts[0]].splitlines()
                     if line.strip() and (not line.startswith("%") or line.startswith("%%")))
    bounds = starts + [len(text)]
    return [header + text[a:b].rstrip() + "\n" for a, b in zip(bounds, bounds[1:])]


def _select_tune(path: Path, text: str, tune: int | None) -> str:
    tunes = abc_tune_texts(text)
    if not tunes:
        raise InputError(f"{path}: no ABC tune found")
    if tune is None:
        if len(tunes) > 1:
            raise InputError(f"{path}: holds {len(tunes)} tunes; pick one with --tune (1-{len(tunes)})")
        return tunes[0]
    if not 1 <= tune <= len(tunes):
        raise InputError(f"{path}: tune {tune} out of range (the file holds {len(tunes)} tunes)")
    return tunes[tune - 1]


# ---------------------------------------------------------------------------------------------------------------
# Converters
# ---------------------------------------------------------------------------------------------------------------

def musicxml_to_abc(xml: bytes | str, name: str = "score") -> str:
    """Raw xml2abc output (`-d 8 -c 6 -x`) for MusicXML bytes or text; no cleanup. Raises ConversionError."""
    from abctoolkit import xml2abc

    data = xml.encode("utf-8") if isinstance(xml, str) else _utf8_xml(xml)
    if isinstance(xml, str):
        data = re.sub(rb"^\s*<\?xml[^>]*\?>", b"<?xml version='1.0' encoding='utf-8'?>", data, count=1)
    if not re.search(rb"<score-partwise[\s>/]", data):
        if re.search(rb"<score-timewise[\s>/]", data):
            raise ConversionError(f"{name}: timewise MusicXML is not supported (xml2abc reads partwise scores)")
        raise InputError(f"{name}: not a MusicXML score (no <score-partwise> element)")
    data = _sanitize_lyric_numbers(data)
    output, log = io.StringIO(), io.StringIO()
    with _XML2ABC_LOCK, contextlib.redirect_stderr(log):
        writer = xml2abc.ABCoutput(name + ".abc", "", 0, _XML2ABC_OPTIONS)
        writer.outfile = output
        previous = getattr(xml2abc, "abcOut", None)
        xml2abc.abcOut = writer  # xml2abc's Parser writes through this module global
        try:
            xml2abc.Parser(_XML2ABC_OPTIONS).parse(io.BytesIO(data))
        except ET.ParseError as error:
            raise InputError(f"{name}: not valid XML: {_one_line(error)}") from error
        except Exception as error:  # xml2abc fails with arbitrary errors (KeyError, TypeError…) on odd files
            raise ConversionError(f"{name}: xml2abc failed: {type(error).__name__}: {_one_line(error)}") from error
        finally:
            xml2abc.abcOut = previous
    abc = output.getvalue()
    if not abc.strip():
        reason = _one_line(log.getvalue()).lstrip("- ") or "no output"
        raise ConversionError(f"{name}: xml2abc produced no ABC ({reason})")
    return abc


def _abc2xml_score(abc_text: str) -> ET.Element:
    """Vree abc2xml on one tune, in-process; raises ConversionError with abc2xml's own message."""
    from abctoolkit import abc2xml
    from pyparsing import ParseException

    log = io.StringIO()
    with _ABC2XML_LOCK, contextlib.redirect_stderr(log):
        abc2xml.prevloc = 0  # beam-break detection state left over from the previous call
        try:
            score = abc2xml.mxm.parse(abc_text, False, False, False)
        except ParseException as error:
            lines = [line.strip() for line in log.getvalue().splitlines() if line.strip()]
            reason = lines[-1] if lines else str(error)
            raise ConversionError(f"abc2xml cannot parse the ABC: {_one_line(reason)} "
                                  f"(line {error.lineno}: {_one_line(error.line)[:60]})") from error
        except Exception as error:  # abc2xml fails with arbitrary errors on malformed music
            raise ConversionError(f"abc2xml failed: {type(error).__name__}: {_one_line(error)}") from error
    # The same normalisation getXmlDocs applies: divide all durations by their common divisor with 21.
    durations = list(score.iter("duration"))
    values = [int(element.text) for element in durations]
    divisor = reduce(gcd, values + [21])
    for element, value in zip(durations, values):
        element.text = str(value // divisor)
    for element in score.iter("divisions"):
        element.text = str(int(element.text) // divisor)
    return score


def _xml_text(score: ET.Element) -> str:
    from abctoolkit import abc2xml

    return abc2xml.fixDoctype(score)


def _balance_score_brackets(line: str) -> str:
    """Close unbalanced brackets of a generated `%%score` line (the reference demo's `complete_brackets`)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack: list[str] = []
    for char in line:
        if char in pairs:
            stack.append(char)
        elif char in pairs.values() and stack and pairs[stack[-1]] == char:
            stack.pop()
    return line + "".join(pairs[char] for char in reversed(stack))


def prepare_abc_for_abc2xml(abc_text: str) -> str:
    """Strip prompt lines and `[r:]`, rest_unreduce rest-reduced interleaved text, close `%%score` brackets, drop
    blank lines (abc2xml ends a tune there) and make sure an `X:` line comes first."""
    text = strip_stream_annotations(strip_prompt_lines(abc_text))
    if is_interleaved(text) and is_rest_reduced(text):
        try:
            text = rest_unreduce(text)
        except (ValueError, ZeroDivisionError, IndexError) as error:
            raise ConversionError(f"cannot restore the omitted rests: {_one_line(error)}") from error
    lines = [line.rstrip() for line in text.split("\n") if line.strip()]
    lines = [_balance_score_brackets(line) if line.startswith("%%score") else line for line in lines]
    if not any(line.startswith("X:") for line in lines):
        lines.insert(0, "X:1")
    return "\n".join(lines) + "\n"


def abc_to_musicxml(abc_text: str) -> str:
    """Standard or interleaved ABC (rest-reduced, `[r:]` and prompt lines allowed) → MusicXML text via abc2xml.

    Raises ConversionError with abc2xml's reason when the text cannot be converted.
    """
    if not abc_text.strip():
        raise ConversionError("empty ABC text")
    return _xml_text(_abc2xml_score(prepare_abc_for_abc2xml(abc_text)))


def _is_line_barred(tune: str) -> bool:
    """True when every music line but the last ends at a barline (or continues with `\\`): abc2xml reads such a
    tune exactly. Essen-style tunes end bars with line ends instead; only music21 honours that."""
    music = [re.sub(r"%.*$", "", line).rstrip() for line in tune.splitlines()]
    music = [line for line in music if line and not re.match(r"^[A-Za-z+]:", line) and not line.startswith("%")]
    return all(_BAR_END.search(line) for line in music[:-1])


def _music21_to_musicxml(source: str | Path, fmt: str) -> bytes:
    from music21 import converter
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    try:
        if isinstance(source, Path):
            score = converter.parse(source, format=fmt, forceSource=True)
        else:
            score = converter.parse(source, format=fmt)
        return GeneralObjectExporter(score).parse()
    except Exception as error:  # music21 raises many unrelated exception types on malformed input
        raise ConversionError(f"music21 cannot read the {fmt} input: {type(error).__name__}: "
                              f"{_one_line(error)}") from error


def abc_tune_to_musicxml(tune_text: str) -> str:
    """One ABC tune (any dialect: folk, Essen, multi-voice, NotaGen's interleaved) → MusicXML text.

    abc2xml first when the tune's bars are closed by barlines (fast and exact); Essen-style tunes (line ends are bar
    ends), and tunes abc2xml rejects, go through music21. Interleaved text never goes to music21, which misreads it.
    """
    if is_interleaved(strip_stream_annotations(tune_text)):
        return abc_to_musicxml(tune_text)  # music21 would misread interleaved voices: no fallback
    if _is_line_barred(tune_text):
        try:
            return _xml_text(_abc2xml_score(prepare_abc_for_abc2xml(tune_text)))
        except ConversionError as abc2xml_error:
            try:
                return _music21_to_musicxml(tune_text, "abc").decode("utf-8")
            except ConversionError as music21_error:
                raise ConversionError(f"{abc2xml_error}; {music21_error}") from music21_error
    return _music21_to_musicxml(tune_text, "abc").decode("utf-8")


def _musicxml_bytes(path: Path, tune: int | None) -> bytes:
    fmt = detect_format(path)
    if fmt == "midi":
        raise ConversionError(f"{path}: MIDI input is not supported (no notation to convert); use MusicXML")
    if fmt == "mxl":
        return _sanitize_lyric_numbers(_utf8_xml(read_mxl(path)))
    data = _read_bytes(path)
    if fmt == "musicxml":
        _check_text(path, data, "MusicXML")
        if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise InputError(f"{path}: not XML (does not start with '<')")
        return _sanitize_lyric_numbers(_utf8_xml(data))
    if fmt == "kern":
        _check_text(path, data, "Humdrum")
        try:
            return _music21_to_musicxml(path, "humdrum")
        except ConversionError as error:
            raise ConversionError(f"{path}: {error}") from error
    _check_text(path, data, "ABC")
    tune_text = _select_tune(path, _decode_text(data), tune)
    try:
        return abc_tune_to_musicxml(tune_text).encode("utf-8")
    except ConversionError as error:
        raise ConversionError(f"{path}: {error}") from error


def score_to_musicxml(path: Path | str, tune: int | None = None) -> str:
    """The MusicXML text `score_to_abc` converts for this file (`tune`: 1-based tune of a multi-tune ABC file)."""
    return _decode_text(_musicxml_bytes(Path(path), tune))


def score_to_abc(path: Path | str, *, interleaved: bool = False, tune: int | None = None) -> str:
    """A score file → cleaned standard ABC in NotaGen's dialect (or interleaved, without rest reduction).

    Raises InputError for unreadable/malformed files and ConversionError when a converter fails; both name the
    file and the reason in one line.
    """
    path = Path(path)
    standard = clean_abc(musicxml_to_abc(_musicxml_bytes(path, tune), name=str(path)))
    if not interleaved:
        return standard
    try:
        return interleave(standard)
    except ConversionError as error:
        raise ConversionError(f"{path}: {error}") from error


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def _write_mxl(output: Path, xml: str) -> None:
    inner = output.with_suffix(".xml").name
    container = ("<?xml version='1.0' encoding='utf-8'?>\n<container><rootfiles>\n"
                 f'<rootfile full-path="{inner}" media-type="application/vnd.recordare.musicxml+xml"/>\n'
                 "</rootfiles></container>\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/container.xml", container)
        archive.writestr(inner, xml)
    atomic_write_bytes(output, buffer.getvalue())


def convert_command(input: Path, output: Path, interleaved: bool = False, tune: int | None = None) -> int:
    """Convert a score between MusicXML/MXL/Humdrum/ABC and NotaGen's ABC.

    The direction follows the file names: a score (.xml, .musicxml, .mxl, .krn, .abc) to .abc gives cleaned
    standard ABC as NotaGen's data pipeline makes it (or interleaved with --interleaved); an .abc file (standard or
    interleaved, also generated text with [r:] and prompt lines) to .xml/.musicxml/.mxl gives MusicXML; a score to
    .xml/.musicxml/.mxl gives the MusicXML the converter reads (e.g. the root file of an .mxl).

    Args:
        input: The score file to read.
        output: The file to write; its extension picks the target format.
        interleaved: Write interleaved ABC (one line per bar) instead of standard ABC.
        tune: For ABC files with several X: tunes, which one (1-based).

    Examples:
        notagen convert bwv66.6.mxl bwv66.6.abc
        notagen convert quartet.musicxml quartet.abc --interleaved
        notagen convert generated.abc generated.musicxml
    """
    input, output = Path(input), Path(output)
    target = output.suffix.lower()
    source_format = detect_format(input)
    if target == ".abc":
        text = score_to_abc(input, interleaved=interleaved, tune=tune)
        atomic_write_text(output, text)
        print(f"wrote {output} ({'interleaved' if interleaved else 'standard'} ABC)")
        return 0
    if target not in (".xml", ".musicxml", ".mxl"):
        raise InputError(f"{output}: unsupported output type '{output.suffix or output.name}' "
                         "(use .abc, .xml, .musicxml or .mxl)")
    if source_format == "abc":
        data = _read_bytes(input)
        _check_text(input, data, "ABC")
        text = _decode_text(data)
        tunes = abc_tune_texts(text)
        if len(tunes) > 1 or tune is not None:
            text = _select_tune(input, text, tune)
        try:
            xml = abc_tune_to_musicxml(text)
        except ConversionError as error:
            raise ConversionError(f"{input}: {error}") from error
    else:
        xml = score_to_musicxml(input, tune=tune)
    if target == ".mxl":
        _write_mxl(output, xml)
    else:
        atomic_write_text(output, xml)
    print(f"wrote {output} (MusicXML)")
    return 0
