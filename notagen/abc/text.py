"""Line-level ABC text tools: the official cleanup of xml2abc output, header/body split, prompt block, bar durations.

Everything here is pure text → text and mirrors the official NotaGen data pipeline (github.com/ElectricAlexis/NotaGen)
so that files we build look exactly like NotaGen's training files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fractions import Fraction

from unidecode import unidecode

# Information fields the reference removes (step 2 of `abc_preprocess_pipeline`).
REMOVED_FIELDS: tuple[str, ...] = ("X:", "T:", "C:", "W:", "w:", "Z:", "%%MIDI")
# Barline symbols, longest first, exactly abctoolkit's `Barlines` order (the regex alternation relies on it).
BARLINES: tuple[str, ...] = ("||:", ":||", "[|:", ":|]", "|]:", ":[|", "|:", "::", ":|", "[|", "||", "|]", "|")
BARLINE_RE = re.compile("(" + "|".join(map(re.escape, BARLINES)) + ")")

_FIELD_LINE = re.compile(r"^[A-Za-z]:")
_VOICE_LINE = re.compile(r"^V:\s*(\S+)(.*)$")
_BAR_NUMBER_COMMENT = re.compile(r"%\d+\s*$")
_QUOTE = re.compile(r'"[^"]*"')
_REPEATED_SYMBOL = re.compile(r"([^a-zA-Z0-9])\1+")
_STREAM_ANNOTATION = re.compile(r"^\[r:[^\]]*\]", re.MULTILINE)
MAX_ANNOTATION_CHARS = 40


# ABC 2.1 applies an accidental to later notes of the same pitch in the same octave, as abc2xml (so the MusicXML and
# MIDI we write), abcm2ps and our reader do; abc2midi by default applies `^c` to every C of the bar in any octave
# (it plays `^c2 C2` as two C sharps, and refuses a tie in `[E^e]-[E^e]`). The ABC files we write say which rule holds.
ACCIDENTALS_DIRECTIVE = "%%propagate-accidentals octave"


def declare_octave_accidentals(text: str) -> str:
    """`text` with ACCIDENTALS_DIRECTIVE after its `X:` line (at the top when it has none); unchanged if present."""
    if ACCIDENTALS_DIRECTIVE in text:
        return text
    text = text.lstrip()
    if text.startswith("X:"):
        first, _, rest = text.partition("\n")
        return f"{first}\n{ACCIDENTALS_DIRECTIVE}\n{rest}"
    return f"{ACCIDENTALS_DIRECTIVE}\n{text}"


def ascii_fold(text: str) -> str:
    """Fold to ASCII with unidecode (the model one-hots 128 byte classes; anything ≥ 128 would crash it)."""
    return unidecode(text)


def is_field_line(line: str) -> bool:
    """True for an information-field line such as `K:G` or `V:1 treble`."""
    return bool(_FIELD_LINE.match(line))


def standard_body_start(lines: list[str]) -> int:
    """Index of the line where the music of standard (block-per-voice) ABC starts; len(lines) if none.

    xml2abc writes the voice definitions (`V:1 treble nm="…"`) in the header and starts each voice's music with a
    second `V:1` line. abctoolkit finds the body by looking for a line that is exactly `V:1`, which misses bodies
    whose voice lines carry definitions (`V:1 clef=treble`, hand-written ABC); we instead start the body at the
    first voice line naming an already defined voice, or at the first music line (then at the voice line that
    introduced it, if any).
    """
    defined: set[str] = set()
    last_voice_line: int | None = None
    for index, line in enumerate(lines):
        voice = _VOICE_LINE.match(line)
        if voice:
            if voice.group(1) in defined:
                return index
            defined.add(voice.group(1))
            last_voice_line = index
            continue
        if not line.strip() or is_field_line(line) or line.startswith("%"):
            continue
        # A music line: the body started at the voice line just before it (which also defined the voice).
        return last_voice_line if last_voice_line is not None else index
    return len(lines)


def clean_abc(standard_abc: str) -> str:
    """The official cleanup of xml2abc output, in the reference's order.

    1. drop blank lines, ASCII-fold every line; 2. remove `X: T: C: W: w: Z: %%MIDI` lines; 3. strip trailing
    `%N` bar-number comments from body lines; 4. on body lines delete literal `\\"`, and on every line delete quoted
    strings that contain a barline symbol; 6. delete `""`; in `"^…"`/`"_…"` annotations collapse runs of one
    repeated non-alphanumeric character and delete the annotation if it is still longer than 40 characters.
    The result contains only ASCII characters.
    """
    lines = [ascii_fold(line) for line in standard_abc.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(REMOVED_FIELDS)]
    body = standard_body_start(lines)
    for index in range(body, len(lines)):
        lines[index] = _BAR_NUMBER_COMMENT.sub("", lines[index])
    for index, line in enumerate(lines):
        if not is_field_line(line) and not line.startswith("%"):
            line = line.replace('\\"', "")
        for quoted in _QUOTE.findall(line):
            if any(symbol in quoted for symbol in BARLINES):
                line = line.replace(quoted, "")
        lines[index] = _clean_annotations(line)
    # Step 3 may leave a line that held only a bar-number comment; it is blank now, so drop it like step 1 would.
    lines = [line for line in lines if line.strip()]
    text = "\n".join(lines) + "\n"
    return text.encode("ascii", "replace").decode("ascii")


def _clean_annotations(line: str) -> str:
    for quoted in _QUOTE.findall(line):
        if quoted == '""':
            line = line.replace(quoted, "")
        elif quoted[1] in "^_":
            shortened = _REPEATED_SYMBOL.sub(r"\1", quoted)
            line = line.replace(quoted, shortened if len(shortened) <= MAX_ANNOTATION_CHARS else "")
    return line


def header_lines(abc: str) -> list[str]:
    """The header of standard or interleaved ABC: the lines before the music (stream annotations removed)."""
    lines = [line for line in strip_stream_annotations(abc).split("\n") if line.strip()]
    start = body_start(lines)
    interleaved = start < len(lines) and lines[start].startswith("[V:")  # else an inline voice of standard ABC
    return lines[:start if interleaved else standard_body_start(lines)]


def original_key(abc: str) -> str:
    """The first global `K:` value (`none` or missing → `C`), as the reference's index `key` field."""
    for line in header_lines(abc):
        if line.startswith("K:"):
            value = line[2:].strip().split()
            return value[0] if value and value[0].lower() != "none" else "C"
    return "C"


def is_body_line(line: str) -> bool:
    """True for a line of interleaved music: it contains `[V:` or starts with a stream annotation `[r:`."""
    return "[V:" in line or line.startswith("[r:")


def body_start(lines: Sequence[str]) -> int:
    """Index of the first body line of interleaved ABC (`is_body_line`); len(lines) if none. Every line before
    it (prompt lines, `%%score`, `L:`, `M:`, `K:`, `V:` definitions) is metadata, as in the reference patchilizer."""
    return next((i for i, line in enumerate(lines) if is_body_line(line)), len(lines))


def split_header_body(text: str) -> tuple[list[str], list[str]]:
    """Split interleaved ABC into (metadata lines, body lines) at `body_start`: empty lines dropped, no newlines
    kept."""
    lines = [line for line in text.split("\n") if line]
    start = body_start(lines)
    return lines[:start], lines[start:]


def prompt_block(period: str, composer: str, instrumentation: str) -> str:
    """The fine-tuning prompt block `%period\\n%composer\\n%instrumentation\\n%end\\n`, ASCII-folded."""
    fields = [" ".join(ascii_fold(value).split()) for value in (period, composer, instrumentation)]
    return "".join(f"%{value}\n" for value in fields) + "%end\n"


def prompt_lines(text: str) -> list[str]:
    """The values of the single-`%` lines a text starts with, up to `%end` (blank lines skipped): the prompt block
    as written, e.g. ["Baroque", "Bach, Johann Sebastian", "Choral"]; [] when the text starts otherwise."""
    values = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not is_comment_line(line):
            break
        value = line[1:].strip()
        if value == "end":
            break
        values.append(value)
    return values


def is_comment_line(line: str) -> bool:
    """True for a line that starts with a single `%`: a prompt line, `%end` or a comment (not a `%%` directive)."""
    return line.startswith("%") and not line.startswith("%%")


def strip_prompt_lines(text: str) -> str:
    """Drop lines that start with a single `%` (prompt lines, `%end`, comments); keep `%%` directives."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_comment_line(line))


def strip_stream_annotations(text: str) -> str:
    """Remove the `[r:i/j]` stream annotations at the start of body lines."""
    return _STREAM_ANNOTATION.sub("", text)


def bar_count(interleaved: str) -> int:
    """Number of bars of interleaved ABC: one per body line (rest-reduced text included)."""
    return len(split_header_body(strip_prompt_lines(interleaved))[1])


def voice_names(abc: str) -> list[str]:
    """Voice ids (`1`, `2`, …) of standard or interleaved ABC, header definitions first, then body order."""
    names: list[str] = []
    for line in strip_stream_annotations(abc).split("\n"):
        found = [match.group(1) for match in [_VOICE_LINE.match(line)] if match]
        found += re.findall(r"\[V:\s*([^\]\s]+)[^\]]*\]", line)
        for name in found:
            if name not in names:
                names.append(name)
    return names


def fraction_text(value: Fraction) -> str:
    """A Fraction as ABC writes a length: `4`, `3/2`."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def first_field(lines: Iterable[str], name: str) -> str | None:
    """Value of the first `name:` field line among `lines`, or None."""
    prefix = name + ":"
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None
