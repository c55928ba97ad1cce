"""Standard (one block per voice) ⇄ interleaved (one line per bar, `[V:1]…|[V:2]…|`) ABC, rest reduction and
`rest_unreduce`.

We parse and render ourselves instead of calling abctoolkit 0.0.6's `rotate_abc`/`unrotate_abc`: those find the
body only through a line that is exactly `V:1` (so `V:1 clef=…` voice lines raise "tunebody index not found"),
duplicate inline `[V:n]` fields, drop a final bar that has no closing barline, and need a structured form we also
need for rest reduction and checks. The bar split itself follows abctoolkit's `split_into_bars_and_barlines`
(barline symbols, the pickup/prefix cases, volta numbers moved onto the barline before them), so the output is
the same as the reference's on xml2abc files.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from notagen.abc.music import bar_duration, meter_length, unit_length
from notagen.abc.text import (
    BARLINE_RE,
    BARLINES,
    body_start,
    first_field,
    fraction_text,
    is_comment_line,
    is_field_line,
    standard_body_start,
    strip_stream_annotations,
)
from notagen.errors import ConversionError

_VOICE_LINE = re.compile(r"^V:\s*(\S+)(.*)$")
_INLINE_VOICE = re.compile(r"\[V:\s*([^\]\s]+)[^\]]*\]")
_INLINE_FIELD = re.compile(r"\[[A-Za-z]:[^\]]*\]")
_TRAILING_COMMENT = re.compile(r"(?<!\\)%.*$")
_VOLTA_AFFIX = re.compile(r"^[0-9:][0-9,.\-:]*")
_RESTS_ONLY_LETTERS = set("zZxX")
_LINE_WIDTH = 100


@dataclass
class Voice:
    """One voice split into bars: `prefix` (inline fields before the first barline), the first bar's left
    barline, then bar texts and the barline closing each bar (volta numbers included, e.g. `:|2`)."""

    id: str
    prefix: str = ""
    left_barline: str = ""
    bars: list[str] = field(default_factory=list)
    right_barlines: list[str] = field(default_factory=list)

    def left_barlines(self) -> list[str]:
        """Left barline of every bar: the first bar's own, then the previous bar's right barline."""
        return [self.left_barline] + self.right_barlines[:-1] if self.bars else []


@dataclass
class ParsedABC:
    """Header lines (no newlines; voice definitions included) and the voices in body order."""

    header: list[str]
    voices: dict[str, Voice]

    @property
    def unit(self) -> Fraction:
        return unit_length(first_field(self.header, "L"))

    @property
    def meter(self) -> str | None:
        return first_field(self.header, "M")

    def bar_counts(self) -> dict[str, int]:
        return {vid: len(voice.bars) for vid, voice in self.voices.items()}

    def bar_durations(self) -> dict[str, list[Fraction | None]]:
        """Per voice, the duration of every bar in whole notes (None where it cannot be measured).

        Inline `[L:]`/`[M:]` changes carry over to the following bars of the same voice.
        """
        result: dict[str, list[Fraction | None]] = {}
        for vid, voice in self.voices.items():
            unit, meter = self.unit, self.meter
            durations: list[Fraction | None] = []
            for index, text in enumerate(voice.bars):
                if index == 0 and voice.prefix:
                    unit, meter = _apply_inline_fields(voice.prefix, unit, meter)
                durations.append(bar_duration(text, unit, meter))
                if "[L:" in text or "[M:" in text:
                    unit, meter = _apply_inline_fields(text, unit, meter)
            result[vid] = durations
        return result


def _apply_inline_fields(text: str, unit: Fraction, meter: str | None) -> tuple[Fraction, str | None]:
    for inline in _INLINE_FIELD.findall(text):
        if inline[1] == "L":
            unit = unit_length(inline[3:-1], unit)
        elif inline[1] == "M":
            meter = inline[3:-1]
    return unit, meter


# ---------------------------------------------------------------------------------------------------------------
# Splitting one voice into bars
# ---------------------------------------------------------------------------------------------------------------

_BARLINE_RUN = re.compile("(?:" + "|".join(map(re.escape, BARLINES)) + r")+[0-9,.\-:]*")


def _is_barline(element: str) -> bool:
    """A barline symbol, possibly with its volta number (`:|2`), or several of them joined by spaces."""
    return all(_BARLINE_RUN.fullmatch(part) for part in element.split())


def _has_music(text: str) -> bool:
    """A bar that holds something measurable (a note or a rest), not just annotations or decorations."""
    duration = bar_duration(text)
    return duration is None or duration > 0


def split_voice(text: str, voice_id: str = "1") -> Voice:
    """Split one voice's music into prefix, left barline, bars and right barlines (abctoolkit's rules)."""
    elements = [element.strip() for element in BARLINE_RE.split(text.replace("\n", " ")) if element.strip()]
    # Adjacent barlines (whitespace between them was dropped): repeated identical ones collapse, as abctoolkit
    # does; different ones are kept together as one barline so that text and barlines keep alternating.
    merged: list[str] = []
    for element in elements:
        if merged and element in BARLINES and _is_barline(merged[-1]):
            if merged[-1].split()[-1] != element:
                merged[-1] += " " + element
            continue
        merged.append(element)
    # Volta numbers (and `:` of a split repeat sign) after a barline belong to that barline: `|1 abc` → `|1`, `abc`.
    for index in range(1, len(merged)):
        if not _is_barline(merged[index]) and _is_barline(merged[index - 1]):
            affix = _VOLTA_AFFIX.match(merged[index])
            if affix:
                merged[index - 1] += affix.group(0)
                merged[index] = merged[index][affix.end():].strip()
    merged = [element for element in merged if element]

    voice = Voice(voice_id)
    position = 0
    if merged and _is_barline(merged[0]):
        voice.left_barline = merged[0]
        position = 1
    elif len(merged) > 1 and _is_barline(merged[1]) and not _INLINE_FIELD.sub("", merged[0]).strip():
        voice.prefix, voice.left_barline = merged[0], merged[1]
        position = 2
    while position < len(merged):
        element = merged[position]
        if _is_barline(element):
            # Two barlines in a row (what stood between them was only a volta number): join them.
            if voice.right_barlines:
                voice.right_barlines[-1] += " " + element
            else:
                voice.left_barline += element
            position += 1
            continue
        closing = merged[position + 1] if position + 1 < len(merged) else None
        if closing is None and voice.bars and not _has_music(element):
            # Trailing annotations after the final barline: keep them with the last bar instead of losing them.
            voice.bars[-1] = f"{voice.bars[-1]} {element}"
        else:
            voice.bars.append(element)
            voice.right_barlines.append(closing or "")
        position += 2
    return voice


# ---------------------------------------------------------------------------------------------------------------
# Standard ABC
# ---------------------------------------------------------------------------------------------------------------

def _music_lines(text: str) -> list[str]:
    # Header lines are kept byte for byte (xml2abc's `V:3 treble ` keeps its trailing space, as in the reference).
    return [line.rstrip("\r") for line in strip_stream_annotations(text).split("\n")
            if line.strip() and not is_comment_line(line)]


def parse_standard(standard_abc: str) -> ParsedABC:
    """Parse standard ABC (header, then each voice's music after its `V:` line) into bars."""
    lines = _music_lines(standard_abc)
    start = standard_body_start(lines)
    header = lines[:start]
    defined = {m.group(1) for m in map(_VOICE_LINE.match, header) if m}
    texts: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines[start:]:
        voice_line = _VOICE_LINE.match(line)
        if voice_line:
            current = voice_line.group(1)
            texts.setdefault(current, [])
            if current not in defined:
                # The voice was defined in the body (`V:2 clef=bass`): its definition belongs in the header.
                _insert_voice_definition(header, line.strip())
                defined.add(current)
            continue
        if current is None:
            current = "1"
            texts.setdefault(current, [])
            if current not in defined:
                _insert_voice_definition(header, "V:1")
                defined.add(current)
        if line.startswith("%"):
            continue  # `%%` directives inside the music cannot be interleaved; comments carry no music
        if is_field_line(line):
            if line[0] in "wWsS":
                continue  # lyrics and symbol lines cannot be interleaved (cleanup removes them anyway)
            texts[current].append(f"[{line[0]}:{line[2:].strip()}]")
            continue
        music = _TRAILING_COMMENT.sub("", line).rstrip("\\ ")
        # Inline voice switches (`[V:1] abc|` lines) select the voice instead of becoming part of its music:
        # abctoolkit keeps them as the voice's prefix and writes `[V:1][V:1]` when interleaving.
        pieces = _INLINE_VOICE.split(music)
        if pieces[0].strip():
            texts[current].append(pieces[0])
        for vid, segment in zip(pieces[1::2], pieces[2::2]):
            current = vid
            texts.setdefault(current, [])
            if current not in defined:
                _insert_voice_definition(header, f"V:{current}")
                defined.add(current)
            if segment.strip():
                texts[current].append(segment)
    voices = {vid: split_voice(" ".join(parts), vid) for vid, parts in texts.items() if parts}
    return ParsedABC(header, voices)


def _insert_voice_definition(header: list[str], definition: str) -> None:
    last = max((i for i, line in enumerate(header) if line.startswith("V:")), default=None)
    if last is None:
        last = max((i for i, line in enumerate(header) if line.startswith("K:")), default=len(header) - 1)
    header.insert(last + 1, definition)


def render_standard(parsed: ParsedABC) -> str:
    """Standard ABC: the header, then per voice a `V:` line and its bars (lines of about 100 characters)."""
    out = list(parsed.header)
    for vid, voice in parsed.voices.items():
        out.append(f"V:{vid}")
        line = (voice.prefix + voice.left_barline).strip()
        for text, barline in zip(voice.bars, voice.right_barlines):
            bar = f"{text} {barline}".strip()
            if line and len(line) + len(bar) + 1 > _LINE_WIDTH:
                out.append(line)
                line = bar
            else:
                line = f"{line} {bar}" if line else bar
        if line:
            out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Interleaved ABC
# ---------------------------------------------------------------------------------------------------------------

def is_interleaved(abc: str) -> bool:
    """True when the music is written as `[V:n]` segments on bar lines rather than `V:` blocks."""
    return any(line.startswith("[V:") for line in strip_stream_annotations(abc).split("\n"))


def render_interleaved(parsed: ParsedABC, reduce_rests: bool = False) -> str:
    """Interleaved ABC: header, then one line per bar index `[V:1]<bar>|[V:2]<bar>|…`.

    Bar 0 carries each voice's prefix and left barline. With `reduce_rests`, a voice's bar is written only if it
    contains a letter other than `z Z x X` (the reference's test: letters in decorations and annotations count),
    so whole-rest bars disappear. Where every voice rests, the reference writes an empty line, which its
    patchilizer then drops, silently deleting the bar; we keep the first voice's rest so the piece keeps its length.
    """
    counts = parsed.bar_counts()
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"V:{vid} {count}" for vid, count in counts.items())
        raise ConversionError(f"cannot interleave: voices have different numbers of bars ({detail})")
    bars = next(iter(counts.values()), 0)
    out = list(parsed.header)
    for index in range(bars):
        segments = []
        for voice in parsed.voices.values():
            text = voice.bars[index]
            if reduce_rests and not any(ch.isalpha() and ch not in _RESTS_ONLY_LETTERS for ch in text):
                continue
            segments.append(_segment(voice, index))
        if not segments:
            segments.append(_segment(next(iter(parsed.voices.values())), index))
        out.append("".join(segments))
    return "\n".join(out) + "\n"


def _segment(voice: Voice, index: int) -> str:
    lead = voice.prefix + voice.left_barline if index == 0 else ""
    return f"[V:{voice.id}]{lead}{voice.bars[index]}{voice.right_barlines[index]}"


def parse_interleaved(interleaved: str) -> ParsedABC:
    """Parse full (not rest-reduced) interleaved ABC: each voice's segments are joined and split into bars."""
    lines = _music_lines(interleaved)
    start = next((i for i, line in enumerate(lines) if "[V:" in line), len(lines))
    header = lines[:start]
    texts: dict[str, list[str]] = {}  # voices in body order (the header may list them in %%score order)
    for line in lines[start:]:
        pieces = _INLINE_VOICE.split(line)
        lead = pieces[0].strip()
        for vid, segment in zip(pieces[1::2], pieces[2::2]):
            if lead:
                segment, lead = lead + segment, ""
            texts.setdefault(vid, []).append(segment.strip())
    voices = {vid: split_voice(" ".join(parts), vid) for vid, parts in texts.items()}
    return ParsedABC(header, voices)


def is_rest_reduced(interleaved: str) -> bool:
    """True when some body line lacks a voice that the piece has (rest-reduced training/generated text)."""
    lines = _music_lines(interleaved)
    start = next((i for i, line in enumerate(lines) if "[V:" in line), len(lines))
    voices = {m.group(1) for m in map(_VOICE_LINE.match, lines[:start]) if m}
    line_voices = [set(_INLINE_VOICE.findall(line)) for line in lines[start:]]
    for found in line_voices:
        voices |= found
    return any(found != voices for found in line_voices)


def interleave(standard_abc: str, reduce_rests: bool = False) -> str:
    """Cleaned standard ABC → interleaved ABC, one line per bar (`reduce_rests`: omit whole-rest voice bars)."""
    return render_interleaved(parse_standard(standard_abc), reduce_rests=reduce_rests)


def deinterleave(interleaved: str) -> str:
    """Interleaved ABC (full or rest-reduced, with or without `[r:]`/prompt lines) → standard ABC."""
    if is_rest_reduced(interleaved):
        interleaved = rest_unreduce(interleaved)
    return render_standard(parse_interleaved(interleaved))


def score_voice_groups(header: list[str]) -> list[list[str]]:
    """Voice groups as the reference's rest_unreduce reads them: each `( … )` group of `%%score`, then every
    other defined voice alone."""
    groups: list[list[str]] = []
    for line in header:
        if line.startswith("%%score"):
            # voice ids only: a `|` or a brace inside the parentheses is no voice
            groups.extend(re.findall(r"[A-Za-z0-9_]+", group) for group in re.findall(r"\((.*?)\)", line))
    grouped = {vid for group in groups for vid in group}
    for line in header:
        match = _VOICE_LINE.match(line)
        if match and match.group(1) not in grouped:
            groups.append([match.group(1)])
            grouped.add(match.group(1))
    return groups


def voice_number_order(ids: list[str]) -> list[str]:
    """Voice ids in number order when all are numbers (as interleaved bodies write them), else as given."""
    return sorted(ids, key=int) if all(vid.isdigit() for vid in ids) else ids


def define_voices_in_order(text: str) -> str:
    """`text` with its header's numbered `V:` definitions in number order, each line unchanged.

    xml2abc (so the training scores, so a model) defines voices in `%%score` order, `V:4` before `V:3` for
    `%%score 1 { ( 2 4 ) | 3 }`; abc2midi then warns "V:4 out of sequence, treating as V:2" and merges voices.
    `%%score` alone places them, so abcm2ps and abc2xml read the reordered text as before."""
    lines = text.split("\n")
    places = [i for i in range(body_start(lines)) if _VOICE_LINE.match(lines[i])]
    definitions = {_VOICE_LINE.match(lines[i]).group(1): lines[i] for i in places}
    ordered = voice_number_order(list(definitions))
    for place, vid in zip(places, ordered):
        lines[place] = definitions[vid]
    return "\n".join(lines)


def rest_unreduce(reduced_interleaved: str) -> str:
    """Re-insert the voices a rest-reduced interleaved text omits (the official code's semantics).

    `[r:]` annotations are stripped. On each line every missing voice gets `z<d>` (first voice of a `%%score`
    `( … )` group, or an ungrouped voice) or `x<d>` (the other voices of a group, invisible rests), where `<d>` is the
    line's most common bar duration in `L:` units, followed by the line's right barline. Voices are written in
    numeric order. Unlike the reference, a voice missing from the first line also gets that line's left barline
    (`|:`), so repeats stay aligned across parts.
    """
    lines = [line for line in strip_stream_annotations(reduced_interleaved).split("\n") if line.strip()]
    start = next((i for i, line in enumerate(lines) if "[V:" in line), len(lines))
    header, body = lines[:start], lines[start:]
    groups = score_voice_groups(header)
    x_voices = {vid for group in groups for vid in group[1:]}
    order = [vid for group in groups for vid in group]
    for line in body:
        for vid in _INLINE_VOICE.findall(line):
            if vid not in order:
                order.append(vid)
    order = voice_number_order(order)
    unit = unit_length(first_field(header, "L"))
    meter_text = first_field(header, "M")
    meter = meter_length(meter_text)
    reference = meter / unit if meter else Fraction(4)

    out = list(header)
    for index, line in enumerate(body):
        pieces = _INLINE_VOICE.split(line)
        segments: dict[str, str] = {}
        for vid, segment in zip(pieces[1::2], pieces[2::2]):
            segments[vid] = segment
        if pieces[0].strip() and segments:
            first = next(iter(segments))
            segments[first] = pieces[0].strip() + segments[first]
        durations: Counter[Fraction] = Counter()
        right_barline = ""
        for segment in segments.values():
            content, right_barline = _split_right_barline(segment)
            duration = bar_duration(content, unit, meter_text)
            if duration is not None:
                durations[duration / unit] += 1
        if durations:
            reference = max(durations, key=durations.__getitem__)  # first of the most common, as the reference
        left = ""
        if index == 0 and segments:
            left = split_voice(next(iter(segments.values()))).left_barline
        rebuilt = []
        for vid in order:
            if vid in segments:
                rebuilt.append(f"[V:{vid}]{segments[vid]}")
            else:
                rest = "x" if vid in x_voices else "z"
                rebuilt.append(f"[V:{vid}]{left}{rest_text(rest, reference)}{right_barline}")
        out.append("".join(rebuilt))
    return "\n".join(out) + "\n"


def rest_text(rest: str, units: Fraction) -> str:
    """A rest of `units` (of L:) written with lengths one note head can show: `z6`, but `z4 z3` for 7 (a single
    `z7` is no written rest; abcm2ps refuses it). Parts are dotted or plain lengths, longest first."""
    parts: list[str] = []
    left = units
    while left > 0:
        piece = Fraction(2) ** (left.numerator.bit_length() - left.denominator.bit_length() + 1)
        while piece > left:
            piece /= 2
        if piece * 3 / 2 <= left:
            piece = piece * 3 / 2
        parts.append(rest + ("" if piece == 1 else fraction_text(piece)))
        left -= piece
    return " ".join(parts) if parts else rest + "0"


def _split_right_barline(segment: str) -> tuple[str, str]:
    """(bar content, right barline with any volta number) of one interleaved segment."""
    parts = BARLINE_RE.split(segment)
    if len(parts) < 3:
        return segment, ""
    barline = "".join(parts[-2:])
    return segment[: len(segment) - len(barline)], barline.strip()


def check_alignment(abc: str) -> tuple[bool, bool, bool]:
    """(barline_equal, bar_no_equal, bar_dur_equal) like abctoolkit's check_alignment_unrotated, for standard or
    interleaved (also rest-reduced) ABC; every voice is compared with the first one."""
    parsed = parse_any(abc)
    voices = list(parsed.voices.values())
    if not voices:
        return True, True, True
    first = voices[0]
    barline_equal = all(v.left_barlines() == first.left_barlines() and v.right_barlines == first.right_barlines
                        for v in voices[1:])
    bar_no_equal = all(len(v.bars) == len(first.bars) for v in voices[1:])
    durations = parsed.bar_durations()
    reference = durations[first.id]
    bar_dur_equal = all(d is not None for d in reference) and all(
        durations[v.id][:len(reference)] == reference[:len(durations[v.id])] for v in voices[1:])
    return barline_equal, bar_no_equal, bar_dur_equal


def parse_any(abc: str) -> ParsedABC:
    """Parse standard or interleaved ABC (rest-reduced text is rest_unreduced first)."""
    if is_interleaved(abc):
        if is_rest_reduced(abc):
            abc = rest_unreduce(abc)
        return parse_interleaved(abc)
    return parse_standard(abc)
