"""Score format conversion, one entry point per direction, all in-process.

* `convert_score(path)`: MusicXML (`.xml`, `.musicxml`, `.mxl`), Humdrum (`.krn`) or ABC → cleaned standard (or
  interleaved) ABC in NotaGen's dialect, made by W. G. Vree's xml2abc (v143, bundled in abctoolkit) with the
  reference options `-d 8 -c 6 -x`, called as a library, and verified: the ABC is read back by abc2xml and every
  note is compared with the source (`notagen.verify`). `score_to_abc(path)` is the same without the check.
* `convert_musicxml(xml)`: the MusicXML → ABC step on its own, after `notagen.musicxml.prepare_musicxml`'s repairs
  and refusals, through the patched converters of `notagen.vree`.
* `score_to_musicxml(path)`: the MusicXML text that ABC was made from (what the verification compares against).
* `abc_to_musicxml(text)` / `read_abc(text)`: standard or interleaved ABC (also rest-reduced, with `[r:]` or prompt
  lines) → MusicXML via Vree's abc2xml, the only reader that understands interleaved multi-voice ABC.
  `read_abc_tune` reads any one tune: abc2xml, except for Essen-style tunes (one voice whose line ends are bar
  ends), which music21 reads; an abc2xml failure is reported, never hidden behind another reader.
* `convert_command`: `notagen convert IN OUT [--no-verify]`, run in a worker process bounded by
  `notagen.limits.Limits` (flags for the main ones); `convert_file` is the same in the current process.

Every reader here checks the input's size, an `.mxl` archive's announced unpacked size (before inflating) and the
score's shape (voices, notes per bar, note lengths, XML depth, no entity declarations) against the limits in force
(`notagen.limits.current_limits`), so a hostile file is refused in one line before the converters see it.

Workarounds for known converter failures: `.mxl` archives whose root file is `*.musicxml` are unpacked here through
`META-INF/container.xml` (xml2abc only looks for `*.xml`); non-numeric lyric numbers (`number="chorus"`, Sibelius
exports) are renumbered before xml2abc sees them; the rest is in `notagen.musicxml` and `notagen.vree`.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from notagen.abc.interleave import interleave, is_interleaved, is_rest_reduced, rest_unreduce
from notagen.abc.text import (
    BARLINES,
    clean_abc,
    declare_octave_accidentals,
    is_comment_line,
    strip_prompt_lines,
    strip_stream_annotations,
)
from notagen.errors import ConversionError, InputError
from notagen.io import atomic_write_bytes, atomic_write_text
from notagen.limits import check_archive, check_input_size, cli_limits, run_limited, scan_abc, scan_musicxml
from notagen.musicxml import prepare_musicxml
from notagen.verify import Verification, compare_scores
from notagen.vree import XML2ABC_OPTIONS, Abc2XmlResult, run_abc2xml, run_xml2abc

Format = Literal["musicxml", "mxl", "kern", "abc", "midi"]

_EXTENSIONS: dict[str, Format] = {".xml": "musicxml", ".musicxml": "musicxml", ".mxl": "mxl", ".krn": "kern",
                                  ".kern": "kern", ".abc": "abc", ".mid": "midi", ".midi": "midi"}
_XML2ABC_OPTIONS = XML2ABC_OPTIONS
_TUNE_START = re.compile(r"^X:[ \t]*(\d*)", re.MULTILINE)
_LYRIC_NUMBER = re.compile(rb"(<lyric\b[^>]*?\bnumber\s*=\s*)([\"'])([^\"']*)\2")
# A line that ends at a barline: the barline, then perhaps a volta number and inline fields (`|[K:D]`), or `\`.
_BAR_END = re.compile("(?:" + "|".join(map(re.escape, BARLINES)) + r")(?:\[?\d[\d,.\-]*)?(?:\s*\[[A-Za-z]:[^\]]*\])*"
                      r"\s*$|\\\s*$")


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
    text = decode_text(head).lstrip("\ufeff\xef\xbb\xbf \t\r\n")
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
        check_input_size(path.stat().st_size, str(path))
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: unreadable: {error.strerror or error}") from error
    if not data.strip():
        raise InputError(f"{path}: empty file")
    return data


def _check_text(path: Path, text: str, kind: str) -> None:
    if "\x00" in text[:65536]:
        raise InputError(f"{path}: binary file, not a {kind} score")


def _utf16_codec(data: bytes) -> str | None:
    """The UTF-16 codec of text that is UTF-16 (a byte-order mark, or `<?`/ASCII in every other byte), else None."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    head = data[:64]
    if len(head) >= 8 and head[1::2].count(0) == len(head[1::2]) and 0 not in head[0::2]:
        return "utf-16-le"
    if len(head) >= 8 and head[0::2].count(0) == len(head[0::2]) and 0 not in head[1::2]:
        return "utf-16-be"
    return None


def decode_text(data: bytes) -> str:
    """Score file bytes → text, the one way every command reads a text score: UTF-16 (with a byte-order mark, or
    detected from its zero bytes), UTF-8 (with or without a BOM), else Latin-1. Undecodable UTF-16 becomes
    replacement characters, so a binary file still shows as binary (NUL characters) to `_check_text`."""
    codec = _utf16_codec(data)
    if codec is not None:
        return data.decode(codec, errors="replace").lstrip("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_text_score(path: Path | str, kind: str = "ABC") -> str:
    """The text of a text score file (ABC, Humdrum), read by `decode_text`; InputError when missing, empty, too
    large or binary."""
    path = Path(path)
    text = decode_text(_read_bytes(path))
    _check_text(path, text, kind)
    return text


def read_mxl(path: Path | str) -> bytes:
    """The MusicXML bytes of the root file of a compressed `.mxl` archive (found via META-INF/container.xml)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_archive(archive, str(path))   # before anything is inflated
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
    if _utf16_codec(data) is not None:
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "<?xml version='1.0' encoding='utf-8'?>", decode_text(data),
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
                     if line.strip() and not is_comment_line(line))
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

@dataclass
class AbcConversion:
    """xml2abc's ABC for a score (raw: not yet cleaned), the visible changes made to the MusicXML on the way (one
    line each) and which ABC voice (`V:n`) each (part index, MusicXML voice number) became."""

    abc: str
    changes: list[str] = field(default_factory=list)
    voices: dict[tuple[int, int], int] = field(default_factory=dict)
    ignored: set[tuple[int, int, str]] = field(default_factory=set)   # (part, bar, voice) dropped on purpose


def convert_musicxml(xml: bytes | str, name: str = "score") -> AbcConversion:
    """MusicXML bytes or text → ABC by xml2abc with NotaGen's options, after `prepare_musicxml`'s repairs.

    Raises InputError for text that is not MusicXML and ConversionError, naming the feature, the part and the bar,
    for music ABC cannot carry and for anything xml2abc fails on.
    """
    data = xml.encode("utf-8") if isinstance(xml, str) else _utf8_xml(xml)
    if isinstance(xml, str):
        data = re.sub(rb"^\s*<\?xml[^>]*\?>", b"<?xml version='1.0' encoding='utf-8'?>", data, count=1)
    if not re.search(rb"<score-(partwise|timewise)[\s>/]", data):
        raise InputError(f"{name}: not a MusicXML score (no <score-partwise> element)")
    prepared = prepare_musicxml(_sanitize_lyric_numbers(data), name)
    result = run_xml2abc(prepared.data, name)
    return AbcConversion(abc=result.abc, changes=prepared.changes, voices=result.voices, ignored=prepared.ignored)


def musicxml_to_abc(xml: bytes | str, name: str = "score") -> str:
    """Raw xml2abc output (`-d 8 -c 6 -x`) for MusicXML bytes or text; no cleanup. Raises ConversionError."""
    return convert_musicxml(xml, name).abc


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


def read_abc(abc_text: str) -> Abc2XmlResult:
    """Standard or interleaved ABC (rest-reduced, `[r:]` and prompt lines allowed) → abc2xml's score element and
    the messages in which abc2xml says it changed the music (rounded or illegal durations, an unreadable meter…)."""
    if not abc_text.strip():
        raise ConversionError("empty ABC text")
    return run_abc2xml(prepare_abc_for_abc2xml(abc_text))


def abc_to_musicxml(abc_text: str) -> str:
    """Standard or interleaved ABC (rest-reduced, `[r:]` and prompt lines allowed) → MusicXML text via abc2xml.

    Raises ConversionError with abc2xml's reason when the text cannot be converted.
    """
    return _xml_text(read_abc(abc_text).score)


def verify_abc(source_xml: str | bytes, abc_text: str, conversion: AbcConversion | None = None) -> Verification:
    """Read `abc_text` back with abc2xml and compare its notes with the source MusicXML's (pitch, onset and
    duration of every note; `conversion`, the one that made the text, names the ABC voices and the notes dropped on
    purpose). Raises ConversionError when abc2xml cannot read the text."""
    voices, ignored = (conversion.voices, conversion.ignored) if conversion is not None else (None, None)
    return compare_scores(source_xml, read_abc(abc_text).score, voices, ignored)


def _music_lines(tune: str) -> list[str]:
    music = [re.sub(r"(?<!\\)%.*$", "", line).rstrip() for line in tune.splitlines()]
    return [line for line in music if line and not re.match(r"^[A-Za-z+]:", line) and not line.startswith("%")]


def _is_line_barred(tune: str) -> bool:
    """True when every music line but the last ends at a barline (any of ABC's: `|`, `||`, `|]`, `:|`, `::`, `[|`…,
    a volta number or inline fields may follow) or continues with `\\`."""
    return all(_BAR_END.search(line) for line in _music_lines(tune)[:-1])


def _is_essen_style(tune: str) -> bool:
    """One voice whose line ends are bar ends: no music line but the last ends at a barline (the Essen folk-song
    collection's dialect, which only music21 reads as meant; abc2xml would join each line's last bar to the next)."""
    if re.search(r"^V:|\[V:", tune, re.MULTILINE):
        return False
    lines = _music_lines(tune)
    return len(lines) > 1 and not any(_BAR_END.search(line) for line in lines[:-1])


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


@dataclass
class AbcTuneReading:
    """One ABC tune as MusicXML, which reader made it (`abc2xml` or `music21`) and what abc2xml said it changed."""

    xml: str
    reader: str
    lossy: list[str] = field(default_factory=list)


def read_abc_tune(tune_text: str) -> AbcTuneReading:
    """One ABC tune (any dialect: folk, Essen, multi-voice, NotaGen's interleaved) → MusicXML.

    abc2xml reads every tune except Essen-style ones (one voice whose line ends are bar ends, see `_is_essen_style`),
    which music21 reads. When abc2xml cannot read a tune the ConversionError says why: no other reader is tried
    behind the user's back (music21 reads standard multi-voice ABC as one part per voice and ignores inline keys).
    """
    if _is_essen_style(strip_stream_annotations(tune_text)):
        return AbcTuneReading(_music21_to_musicxml(tune_text, "abc").decode("utf-8"), "music21")
    result = read_abc(tune_text)
    return AbcTuneReading(_xml_text(result.score), "abc2xml", result.lossy)


def abc_tune_to_musicxml(tune_text: str) -> str:
    """One ABC tune (any dialect) → MusicXML text; see `read_abc_tune`."""
    return read_abc_tune(tune_text).xml


def _source(path: Path, tune: int | None) -> tuple[bytes, list[str]]:
    """The MusicXML a score file is converted from, and notes on how it was read (ABC input: the reader, and what
    abc2xml said it changed)."""
    fmt = detect_format(path)
    if fmt == "midi":
        raise ConversionError(f"{path}: MIDI input is not supported (no notation to convert); use MusicXML")
    if fmt == "mxl":
        xml = _utf8_xml(read_mxl(path))
        scan_musicxml(xml, str(path))
        return _sanitize_lyric_numbers(xml), []
    data = _read_bytes(path)
    if fmt == "musicxml":
        xml = _utf8_xml(data)
        if b"\x00" in xml[:65536]:
            raise InputError(f"{path}: binary file, not a MusicXML score")
        if not xml.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            raise InputError(f"{path}: not XML (does not start with '<')")
        scan_musicxml(xml, str(path))
        return _sanitize_lyric_numbers(xml), []
    if fmt == "kern":
        _check_text(path, decode_text(data), "Humdrum")
        try:
            return _music21_to_musicxml(path, "humdrum"), []
        except ConversionError as error:
            raise ConversionError(f"{path}: {error}") from error
    text = decode_text(data)
    _check_text(path, text, "ABC")
    tune_text = _select_tune(path, text, tune)
    scan_abc(tune_text, str(path))
    try:
        reading = read_abc_tune(tune_text)
    except ConversionError as error:
        raise ConversionError(f"{path}: {error}") from error
    notes = [f"abc2xml changed the music while reading the ABC: {message}" for message in reading.lossy]
    if reading.reader == "music21":
        notes.append("read by music21: one voice whose line ends are bar ends (Essen style)")
    return reading.xml.encode("utf-8"), notes


def _musicxml_bytes(path: Path, tune: int | None) -> bytes:
    return _source(path, tune)[0]


def score_to_musicxml(path: Path | str, tune: int | None = None) -> str:
    """The MusicXML text `score_to_abc` converts for this file (`tune`: 1-based tune of a multi-tune ABC file)."""
    return decode_text(_musicxml_bytes(Path(path), tune))


@dataclass
class ScoreConversion:
    """A score file in NotaGen's ABC: the text, the MusicXML it was made from, the visible changes made on the way
    (one line each), and, when verified, the comparison of the text read back with that MusicXML."""

    text: str
    source_xml: str
    changes: list[str] = field(default_factory=list)
    verification: Verification | None = None


def convert_score(path: Path | str, *, interleaved: bool = False, tune: int | None = None,
                  verify: bool = True) -> ScoreConversion:
    """A score file → cleaned standard ABC in NotaGen's dialect (or interleaved, without rest reduction), with
    `verify` read back by abc2xml and compared note by note with the source.

    Raises InputError for unreadable/malformed files and ConversionError when a converter fails or the music cannot
    be written in ABC; both name the file and the reason in one line. A verification that finds differences is
    returned, not raised: `verification.exact` is False and `verification.summary()` says what changed.
    """
    path = Path(path)
    source, notes = _source(path, tune)
    conversion = convert_musicxml(source, name=str(path))
    text = clean_abc(conversion.abc)
    if interleaved:
        try:
            text = interleave(text)
        except ConversionError as error:
            raise ConversionError(f"{path}: {error}") from error
    result = ScoreConversion(text, decode_text(source), notes + conversion.changes)
    if verify:
        try:
            result.verification = verify_abc(source, text, conversion)
        except ConversionError as error:
            raise ConversionError(f"{path}: the ABC written cannot be read back: {error}") from error
    return result


def score_to_abc(path: Path | str, *, interleaved: bool = False, tune: int | None = None) -> str:
    """A score file → cleaned standard ABC in NotaGen's dialect (or interleaved, without rest reduction), not
    verified (see `convert_score`).

    Raises InputError for unreadable/malformed files and ConversionError when a converter fails; both name the
    file and the reason in one line.
    """
    return convert_score(path, interleaved=interleaved, tune=tune, verify=False).text


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


def _report(output: Path, kind: str, notes: list[str]) -> list[str]:
    return [f"wrote {output} ({kind})"] + [f"  note: {note}" for note in notes]


def convert_command(input: Path, output: Path, interleaved: bool = False, tune: int | None = None,
                    verify: bool = True, max_input_mb: float | None = None, max_unpacked_mb: float | None = None,
                    max_voices: int | None = None, max_notes_per_bar: int | None = None,
                    max_seconds: float | None = None, max_memory_mb: int | None = None) -> int:
    """Convert a score between MusicXML/MXL/Humdrum/ABC and NotaGen's ABC, checking that no note changes.

    The direction follows the file names: a score (.xml, .musicxml, .mxl, .krn, .abc) to .abc gives cleaned
    standard ABC as NotaGen's data pipeline makes it (or interleaved with --interleaved); an .abc file (standard or
    interleaved, also generated text with [r:] and prompt lines) to .xml/.musicxml/.mxl gives MusicXML; a score to
    .xml/.musicxml/.mxl gives the MusicXML the converter reads (e.g. the root file of an .mxl).

    Writing ABC is verified like `notagen data build`: the ABC is read back and every note (pitch, onset,
    duration) is compared with the source; on any difference nothing is written and the error says which voice,
    bar and notes changed and what notation that bar holds. Music ABC cannot carry (percussion, microtones, notes
    shorter than a 64th, keys beyond 7 accidentals) is refused with the feature and the bar. Reading ABC is
    refused when abc2xml has to change the music to read it (e.g. rounds a duration). Changes made on the way that
    keep the notes (e.g. hidden notes shown) are printed as notes.

    Args:
        input: The score file to read.
        output: The file to write; its extension picks the target format.
        interleaved: Write interleaved ABC (one line per bar) instead of standard ABC.
        tune: For ABC files with several X: tunes, which one (1-based).
        verify: Check the result as described above; --no-verify writes without checking.
        max_input_mb: Refuse an input file larger than this (default 20; 0: no bound).
        max_unpacked_mb: Refuse an .mxl whose archive directory announces more than this unpacked (default 100).
        max_voices: Refuse a score with more voices (default 128).
        max_notes_per_bar: Refuse a score with more notes in one bar of one voice or part (default 1024).
        max_seconds: Stop the conversion after this many seconds (default 300).
        max_memory_mb: Stop the conversion when its process needs more memory than this (default 4096).

    The conversion runs in a worker process bounded by these limits; hitting one is reported in one line that
    names it.

    Examples:
        notagen convert bwv66.6.mxl bwv66.6.abc
        notagen convert quartet.musicxml quartet.abc --interleaved
        notagen convert generated.abc generated.musicxml
    """
    limits = cli_limits(max_input_mb, max_unpacked_mb, max_voices, max_notes_per_bar, max_seconds, max_memory_mb)
    lines = run_limited(convert_file, Path(input), Path(output), interleaved=interleaved, tune=tune, verify=verify,
                        limits=limits, name=str(input))
    print("\n".join(lines))
    return 0


def convert_file(input: Path, output: Path, interleaved: bool = False, tune: int | None = None,
                 verify: bool = True) -> list[str]:
    """`notagen convert` in the current process (`convert_command` runs it in a bounded worker): writes `output`,
    returns the lines to print."""
    input, output = Path(input), Path(output)
    target = output.suffix.lower()
    source_format = detect_format(input)
    if target == ".abc":
        result = convert_score(input, interleaved=interleaved, tune=tune, verify=verify)
        check = result.verification
        if check is not None and not check.exact:
            raise ConversionError(f"{input}: not written: {check.summary()}")
        lossy = [note for note in result.changes if note.startswith("abc2xml changed")]
        if verify and lossy:
            raise ConversionError(f"{input}: not written: {lossy[0]}")
        atomic_write_text(output, declare_octave_accidentals(result.text))
        kind = "interleaved ABC" if interleaved else "standard ABC"
        return _report(output, f"{kind}, {check.summary()}" if check is not None else f"{kind}, not verified",
                       result.changes + (check.warnings if check is not None else []))
    if target not in (".xml", ".musicxml", ".mxl"):
        raise InputError(f"{output}: unsupported output type '{output.suffix or output.name}' "
                         "(use .abc, .xml, .musicxml or .mxl)")
    notes: list[str] = []
    if source_format == "abc":
        text = read_text_score(input)
        tunes = abc_tune_texts(text)
        if len(tunes) > 1 or tune is not None:
            text = _select_tune(input, text, tune)
        scan_abc(text, str(input))
        try:
            reading = read_abc_tune(text)
        except ConversionError as error:
            raise ConversionError(f"{input}: {error}") from error
        if verify and reading.lossy:
            raise ConversionError(f"{input}: not written: abc2xml changed the music while reading the ABC: "
                                  f"{reading.lossy[0]}")
        xml = reading.xml
        notes = [f"abc2xml changed the music while reading the ABC: {m}" for m in reading.lossy]
        if reading.reader == "music21":
            notes.append("read by music21: one voice whose line ends are bar ends (Essen style)")
    else:
        xml = score_to_musicxml(input, tune=tune)
    if target == ".mxl":
        _write_mxl(output, xml)
    else:
        atomic_write_text(output, xml)
    return _report(output, "MusicXML", notes)
