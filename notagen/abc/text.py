"""Line-level ABC text tools: the official cleanup of xml2abc output, header/body split, prompt block, bar durations.

Everything here is pure text → text and mirrors the reference pipeline (format-and-model.md §1.2–1.4, §2.2) so that
files we build look exactly like NotaGen's training files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from functools import lru_cache

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
    """The official cleanup of xml2abc output (format-and-model §1.2 steps 1–4 and 6), in the reference's order.

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
    """The header of standard or interleaved ABC: the lines before the music (prompt and stream lines excluded)."""
    lines = [line for line in strip_stream_annotations(abc).split("\n") if line.strip()]
    interleaved_start = next((i for i, line in enumerate(lines) if line.startswith("[V:")), None)
    end = interleaved_start if interleaved_start is not None else standard_body_start(lines)
    return lines[:end]


def original_key(abc: str) -> str:
    """The first global `K:` value (`none` or missing → `C`), as the reference's index `key` field."""
    for line in header_lines(abc):
        if line.startswith("K:"):
            value = line[2:].strip().split()
            return value[0] if value and value[0].lower() != "none" else "C"
    return "C"


def split_header_body(text: str) -> tuple[list[str], list[str]]:
    """Split into (metadata lines, body lines) as the patchilizer does: empty lines dropped, no newlines kept.

    The body starts at the first line that contains `[V:` or starts with `[r:`.
    """
    lines = [line for line in text.split("\n") if line]
    start = next((i for i, line in enumerate(lines) if "[V:" in line or line.startswith("[r:")), len(lines))
    return lines[:start], lines[start:]


def prompt_block(period: str, composer: str, instrumentation: str) -> str:
    """The fine-tuning prompt block `%period\\n%composer\\n%instrumentation\\n%end\\n`, ASCII-folded."""
    fields = [" ".join(ascii_fold(value).split()) for value in (period, composer, instrumentation)]
    return "".join(f"%{value}\n" for value in fields) + "%end\n"


def strip_prompt_lines(text: str) -> str:
    """Drop lines that start with a single `%` (prompt lines, `%end`, comments); keep `%%` directives."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not (line.startswith("%") and not line.startswith("%%")))


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


# ---------------------------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------------------------

_DURATION_SKIP = re.compile(r'"[^"]*"|![^!\n]*!|\+[^+\s]*\+|\{[^}]*\}|%.*$', re.MULTILINE)
_LENGTH = r"\d*(?:/+\d*)*"
_DURATION_TOKEN = re.compile(
    r"(?P<field>\[[A-Za-z]:[^\]]*\])"
    r"|(?P<tuplet>\((?P<p>\d+)(?::(?P<q>\d*))?(?::(?P<r>\d*))?)"
    rf"|\[(?P<chord>[^\]\[]*)\](?P<chord_length>{_LENGTH})"
    rf"|(?P<note>(?:\^\^|__|\^|_|=)?[A-Ga-g][,']*)(?P<note_length>{_LENGTH})"
    rf"|(?P<rest>[zx])(?P<rest_length>{_LENGTH})"
    r"|(?P<bar_rest>[ZX])(?P<bars>\d*)"
    r"|(?P<broken>[<>]+)"
    r"|(?P<overlay>&)"
)
_CHORD_NOTE = re.compile(rf"(?:\^\^|__|\^|_|=)?[A-Ga-g][,']*({_LENGTH})")


@lru_cache(maxsize=4096)
def length_factor(text: str) -> Fraction:
    """The multiplier an ABC length suffix denotes: `` → 1, `2` → 2, `/` → 1/2, `3/2` → 3/2, `//` → 1/4."""
    if not text:
        return Fraction(1)
    match = re.match(r"(\d*)(.*)", text)
    numerator = int(match.group(1)) if match.group(1) else 1
    denominator = 1
    for digits in re.findall(r"/(\d*)", match.group(2)):
        denominator *= int(digits) if digits else 2
    if denominator == 0:
        raise ValueError(f"zero length denominator in {text!r}")
    return Fraction(numerator, denominator)


@lru_cache(maxsize=256)
def parse_meter(value: str | None) -> tuple[int, int] | None:
    """`M:` value → (numerator, denominator); `C` → (4, 4), `C|` → (2, 2); `none`/free/invalid → None."""
    if value is None:
        return None
    value = value.strip()
    if value == "C":
        return (4, 4)
    if value == "C|":
        return (2, 2)
    match = re.fullmatch(r"\(?([\d+]+)\)?\s*/\s*(\d+)", value)
    if not match:
        return None
    numerator = sum(int(part) for part in match.group(1).split("+") if part)
    denominator = int(match.group(2))
    return (numerator, denominator) if numerator and denominator else None


def parse_unit_length(value: str | None, default: Fraction = Fraction(1, 8)) -> Fraction:
    """`L:` value → a Fraction of a whole note (`1/8` → 1/8); anything unreadable → `default`."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not match or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        return default
    return Fraction(int(match.group(1)), int(match.group(2)))


def _tuplet_time(p: int, meter: tuple[int, int] | None) -> int:
    """ABC's default q for `(p`: 2→3, 3→2, 4→3, 6→2, 8→3, otherwise 3 in compound and 2 in simple metres."""
    defaults = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}
    if p in defaults:
        return defaults[p]
    compound = meter is not None and meter[0] % 3 == 0 and meter[0] > 3
    return 3 if compound else 2


def bar_duration(bar_text: str, unit: Fraction = Fraction(1, 8), meter: str | None = None) -> Fraction | None:
    """Duration of one bar of ABC music in whole notes, or None when the text cannot be measured.

    Understands notes, rests (`z x`, bar rests `Z X`), chords (length of the first note times the outer length),
    tuplets `(p:q:r`, broken rhythm `>`/`<`, inline `[L:]`/`[M:]` fields, and skips grace groups, decorations,
    annotations and chord symbols. Overlays (`&`) count once (the longest layer).
    """
    meter_value = parse_meter(meter)
    text = _DURATION_SKIP.sub(" ", bar_text)
    items: list[Fraction] = []
    layers: list[Fraction] = []
    tuplets: list[list] = []  # [notes still affected, factor]
    broken: str | None = None
    for token in _DURATION_TOKEN.finditer(text):
        if token.group("field") is not None:
            field = token.group("field")
            if field[1] == "L":
                unit = parse_unit_length(field[3:-1], unit)
            elif field[1] == "M":
                meter_value = parse_meter(field[3:-1])
            continue
        if token.group("tuplet") is not None:
            p = int(token.group("p"))
            if p == 0:
                return None
            q = int(token.group("q")) if token.group("q") else _tuplet_time(p, meter_value)
            r = int(token.group("r")) if token.group("r") else p
            tuplets.append([r, Fraction(q, p)])
            continue
        if token.group("broken") is not None:
            if not items or broken is not None:
                return None
            broken = token.group("broken")
            continue
        if token.group("overlay") is not None:
            layers.append(sum(items, Fraction(0)))
            items = []
            continue
        if token.group("bar_rest") is not None:
            if meter_value is None:
                return None
            bars = int(token.group("bars")) if token.group("bars") else 1
            items.append(Fraction(meter_value[0], meter_value[1]) * bars)
            continue
        try:
            if token.group("chord") is not None:
                first = _CHORD_NOTE.search(token.group("chord"))
                if first is None:
                    return None
                length = length_factor(first.group(1)) * length_factor(token.group("chord_length"))
            elif token.group("note") is not None:
                length = length_factor(token.group("note_length"))
            else:
                length = length_factor(token.group("rest_length"))
        except ValueError:
            return None
        duration = length * unit
        for tuplet in tuplets:
            duration *= tuplet[1]
            tuplet[0] -= 1
        tuplets = [tuplet for tuplet in tuplets if tuplet[0] > 0]
        if broken is not None:
            short = Fraction(1, 2 ** len(broken))
            first_factor, second_factor = (2 - short, short) if broken[0] == ">" else (short, 2 - short)
            items[-1] *= first_factor
            duration *= second_factor
            broken = None
        items.append(duration)
    if broken is not None:
        return None
    layers.append(sum(items, Fraction(0)))
    return max(layers)


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
