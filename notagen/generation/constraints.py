"""Strict decoding: a piece is written so that it cannot come out invalid.

`StrictDecoder` follows the text of one piece character by character, with the one ABC lexer
(`notagen.abc.lexer`) and the one reader of what the music means (`notagen.abc.music.VoiceReader`), and tells
the sampler which characters may come next. It enforces, while sampling, every rule of `notagen.abc.check`, and a
few more that keep abc2midi, abcm2ps and MIDI readers silent:

* the header: `%end` after the prompt, `%%score`, `L:` (1/4, 1/8, 1/16), `M:` (the training scores' meters), `Q:`
  (a plain or dotted beat), `K:` (keys of at most 7 sharps or flats), then `V:1 … V:n` in order, with a clef and
  names; the prompt is not written again;
* the stream counters: `[r:i/j]` counts lines up and down exactly, so line 0 fixes the piece's length (within
  `--max-bars`), and the piece ends (the EOS patch) right after its `[r:…/0]` line;
* each bar of each voice lasts the meter; only line 0 may be shorter (a pickup, chosen by its first voice), and
  then the last line completes it (or lasts the meter); the voices of a line last equally long;
* well-formed tokens only: notes, rests, chords (one length), ties to the same written note (even across a
  barline; a tied voice cannot be left out of the next line), slurs (closed by the end), tuplets `(2 (3 (4 (6` of
  equal notes, grace groups before a note, `>` broken rhythm, known decorations, `"^…"`/`"_…"` annotations; no
  inline field except, at the start of line 0, a key of the header's signature (the training scores name the
  lower voices' key of a minor piece by its relative major); lengths one note head can show;
* every note inside its part's range (`notagen.instruments`);
* one barline per line for every voice: `|`, `||`, repeats `|:` `:|` `::` (properly opened and closed, and none
  when the piece has a pickup, which abc2midi miscounts), and `|]` (or `:|`) at the end;
* the unit structure the model was trained on (the patchilizer's split): a voice's bar ends with the patch's EOS
  when another voice follows (whose unit starts with the barline), or with the line's final barline and newline.

It works for any checkpoint. Only the sampler's top-k candidates are offered; the most likely ones that are
allowed stay, and only when none of them is allowed do the best allowed characters beyond the top-k come in.

A continuation (a given score) is read with the same rules, except that its header may use any key or meter ABC
defines; if the given music itself breaks a rule, the decoder stands aside for that piece (`disabled`, with the
reason) and the piece is checked afterwards as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import regex
import torch
from torch import Tensor

from notagen.abc.interleave import voice_number_order
from notagen.abc.lexer import Lexer, Token, chord_members, is_prefix, length_value, note_parts
from notagen.abc.music import (
    GRACE_SHARE,
    MAX_STAFF_VOICES,
    MUSICXML_TICKS,
    VoiceReader,
    diatonic_step,
    ends_a_span,
    is_notatable,
    key_values,
    meter_length,
    midi_pitch,
    parse_key,
    span_of,
    unit_length,
)
from notagen.config import BOS_ID, EOS_ID, PAD_ID
from notagen.generation.sampling import SamplingSettings, filtered_distribution, pick, sample
from notagen.instruments import octave_shift, voice_instruments
from notagen.patchilizer import Patchilizer

CHECKED = 16
"""Candidates examined when the sampler keeps all characters (top-k 0)."""

# The meters of the training scores (4/2: 1,055 of Palestrina's 1,159 pieces, refused before: steered to 4/4).
METERS = ("2/4", "3/4", "4/4", "C", "C|", "2/2", "3/2", "4/2", "6/8", "9/8", "12/8", "3/8", "6/4", "5/4", "5/8",
          "7/8")
UNITS = ("1/8", "1/4", "1/16")
TUPLETS = {"2": 3, "3": 2, "4": 3, "6": 2}  # p → q
# The decorations the decoder writes. Hairpins (`!<(!` … `!<)!`), accents `!>!` and pedal marks are among the
# training scores' most common: without them a model that began `!<` was steered to a fermata or a dynamic.
DECORATIONS = ("fermata", "trill", "tenuto", "accent", "mordent", "turn", "upbow", "downbow", "arpeggio", "breath",
               "wedge", "ppp", "pp", "p", "mp", "mf", "f", "ff", "fff", "sfz", "emphasis", "pralltriller", ">", "^",
               "<(", "<)", ">(", ">)", "ped", "ped-up")
SPAN_ENDS = tuple(name for name in DECORATIONS if ends_a_span(name))  # what a full bar may still take
SHORT_DECORATIONS = ".HTuvMP"  # not `~`: abc2midi plays a roll as grace notes that often overrun short notes
MIN_DURATION = Fraction(1, 32)
"""The shortest note written: shorter ones (1/64, 1/128) lose time in abc2xml's MusicXML divisions."""
MAX_WAITING = 3
MAX_ANNOTATION = 30
MAX_VOICES = 12  # abc2midi gives each voice a MIDI channel (15 besides drums)
MAX_HEADER_LINES = 40
MAX_CHORD = 5
MAX_GRACE = 4
# Part names a voice may take: the names scores in the training collections use most, and the instruments that
# `notagen.instruments` knows. A free-text name let a small model write junk such as `nm="Vnolin 2 z2 )"`, which
# notation programs then print over the staff and cannot map to an instrument. A name the training scores use often
# must be here: OpenScore Lieder names a song's voice "Singstimme\nVoice" or "Chant\nVoice" (`\n`: a second line
# on the page) in a third of its songs, and without those a model that began one was steered to "Soprano", then
# wrote a choir ("Alto", "Tenor" next) instead of voice and piano.
PART_NAMES = (
    "Soprano", "Soprano 1", "Soprano 2", "Soprano I", "Soprano II", "Mezzo-soprano", "Alto", "Alto 1", "Alto 2",
    "Contralto", "Tenor", "Tenor 1", "Tenor 2", "Baritone", "Bass", "Bass 1", "Bass 2", "Basso", "Voice", "Voice 1",
    "Voice 2", r"Singstimme\nVoice", r"Chant\nVoice", r"Gesang\nVoice", r"Stimme\nVoice", r"Canto\nVoice",
    "Singstimme", "Gesang", "Canto", "Cantus", "Altus", "Quinto", "Contratenor", "Choir",
    "Piano", "Pianoforte", "Organ", "Harpsichord", "Continuo", "Guitar", "Lute", "Harp",
    "Violin", "Violin 1", "Violin 2", "Violin I", "Violin II", "Viola", "Violoncello", "Cello", "Contrabass",
    "Flute", "Oboe", "Oboe 1", "Oboe 2", "Clarinet", "Clarinet in C", "Bassoon", "Horn", "Horn 1", "Horn 2",
    "Trumpet", "Trumpet 1", "Trumpet 2", "Trumpet 3", "Trombone", "Timpani",
)
SHORT_PART_NAMES = ("S.", "A.", "T.", "B.", "S", "A", "T", "B", "C.", "Q.", "Bar", "Bar.", "Vo.", "Pno.", "Org.",
                    "Vln.", "Vln. I", "Vln. II", "Vla.", "Vc.", "Cb.", "Fl.", "Ob.", "Cl.", "Bsn.", "Hn.", "Tpt.",
                    "Tbn.", "Timp.")
NAME = "(?:" + "|".join(re.escape(name) for name in sorted(PART_NAMES, key=len, reverse=True)) + ")"
SHORT_NAME = "(?:" + "|".join(re.escape(name) for name in sorted(SHORT_PART_NAMES, key=len, reverse=True)) + ")"
CLEF = r"(?:treble|bass|alto|tenor)(?:-8)?"


def _lengths() -> dict[str, Fraction]:
    """Length suffixes the decoder writes (in units of L:), in both usual spellings: 1/8 … 16, single dots."""
    values: dict[str, Fraction] = {}
    for denominator, spellings in ((2, ("/", "/2")), (4, ("//", "/4")), (8, ("/8",))):
        for spelling in spellings:
            values[spelling] = Fraction(1, denominator)
        values[f"3/{denominator}" if denominator > 2 else "3/"] = Fraction(3, denominator)
    values["3/2"] = Fraction(3, 2)
    for whole in (1, 2, 3, 4, 6, 8, 12, 16):
        values["" if whole == 1 else str(whole)] = Fraction(whole)
    return values


LENGTHS = _lengths()


@lru_cache(maxsize=1)
def _length_prefixes() -> dict[str, Fraction]:
    """Every prefix of an allowed length suffix → the smallest length it can still become."""
    smallest: dict[str, Fraction] = {}
    for text, value in LENGTHS.items():
        for end in range(len(text) + 1):
            prefix = text[:end]
            smallest[prefix] = min(smallest.get(prefix, value), value)
    return smallest


def _span_ok(decoration: str, open_spans: frozenset[str]) -> bool:
    """A span's end only while it is open, its start only while it is not; other decorations always."""
    span = span_of(decoration)
    return span is None or (span in open_spans) == ends_a_span(decoration)


@lru_cache(maxsize=64)
def _restatements(key_text: str) -> tuple[str, ...]:
    """The inline `[K:…]` fields a voice may open line 0 with: the header's signature, named as a major or minor key.
    The training scores write the relative major in the lower voices of a minor piece (`K:Gmin`, `[V:2][K:Bb]`:
    xml2abc names each part's key); when only `[K:Gmin]` was offered, a model that began `[K:` was steered into a
    chord (`[G,C]`) and wrote the voice after a start no score has."""
    fifths = parse_key(key_text).fifths
    return tuple(f"[K:{value}]" for value in sorted(key_values())
                 if not value.endswith(("dor", "mix", "phr", "lyd", "loc")) and parse_key(value).fifths == fifths)


def _header_patterns(state: tuple) -> regex.Pattern:
    """The header lines allowed next, as one pattern for partial matching (cached per header state)."""
    return _compile_header(*state)


@lru_cache(maxsize=256)
def _compile_header(want_end: bool, score: bool, unit: bool, meter: bool, tempo: bool, key: bool,
                    next_voice: str | None) -> regex.Pattern:
    options = []
    if want_end:
        options.append("%end")
    else:
        if unit:
            options.append("L:(?:" + "|".join(map(re.escape, UNITS)) + ")")
        if meter:
            options.append("M:(?:" + "|".join(map(re.escape, METERS)) + ")")
        if tempo:
            # a beat of a half, quarter or eighth note, or a dotted one (`Q:3/8=` in 6/8: 383 of the training scores)
            options.append(r"Q:(?:1/(?:2|4|8)|3/(?:4|8))=[1-9]\d{1,2}")
        if key:
            options.append("K:(?:" + "|".join(sorted(map(re.escape, key_values()), key=len, reverse=True)) + ")")
        if next_voice is not None:
            options.append(rf'V:{re.escape(next_voice)}(?: {CLEF})?(?: nm="{NAME}")?(?: snm="{SHORT_NAME}")? ?')
    return regex.compile("|".join(f"(?:{option})" for option in options) or "(?!)")


MAX_SCORE_LINE = 100
_SCORE_OPEN = {"[": "]", "{": "}", "(": ")"}
_SCORE_PAIR = {close: open_ for open_, close in _SCORE_OPEN.items()}
_SCORE_RANK = {"[": 3, "{": 2, "(": 1}


def score_line_ok(line: str, complete: bool) -> bool:
    """A `%%score` line as the decoder writes it, e.g. `%%score [ 1 | 2 | ( 3 4 ) ]`: voice numbers 1, 2, 3 … in
    order, groups in brackets, braces or parentheses (at most two deep, never empty), `|` only between two items.
    Not `complete`: the text can still become such a line (within MAX_SCORE_LINE characters).

    Braces hold one instrument on two staves, as in 98 % of the training scores' braces (a piano: `{ 2 | ( 3 4 ) }`),
    and there the numbers may come in any order, as the training songs write them (xml2abc numbers a piano's second
    voices after its staves: `1 { ( 2 4 ) | 3 }`, `1 { ( 2 5 ) | ( 3 4 ) }`, 60 % of the songs); the group begins
    with the next number and closes only when it has used every number up to its largest. Elsewhere the numbers
    come in order: any order anywhere, or braces of any size, let a small model write layouts no score has."""
    if len(line) <= 8:
        return not complete and "%%score ".startswith(line)
    if not line.startswith("%%score ") or len(line) > MAX_SCORE_LINE:
        return False
    tokens = line[8:].split(" ")
    stack: list[str] = []
    voices = staff_voices = 0
    brace_used: set[int] = set()  # the numbers of the open brace group
    brace_staves = 0  # staves it has begun
    previous = "start"  # start, open, item, bar

    def missing(used: set[int]) -> int:
        return max(used) - min(used) + 1 - len(used) if used else 0

    def brace_room(in_staff: int | None, staves: int) -> int:
        """Voices a brace group can still take: `in_staff` voices in an open parenthesis (None: none open)."""
        second = MAX_STAFF_VOICES if staves < 2 else 0
        return second if in_staff is None else MAX_STAFF_VOICES - in_staff + second

    def numbers(opening: bool = False) -> list[str]:
        """The numbers the next voice may take (`opening`: the first of a parenthesis about to open)."""
        if "}" not in stack:
            return [str(voices + 1)] if voices < MAX_VOICES else []
        base = min(brace_used) if brace_used else voices + 1
        bare = stack[-1] == "}" and not opening  # a staff of one voice
        staves = brace_staves + (bare or opening)
        in_staff = None if bare else (0 if opening else staff_voices) + 1
        if in_staff is not None and in_staff > MAX_STAFF_VOICES:
            return []
        top = min(base + 2 * MAX_STAFF_VOICES - 1, MAX_VOICES) if brace_used else base

        def fits(n: int) -> bool:
            used = brace_used | {n}
            # the numbers left out still fit, and a second staff (still to begin) will find a number
            return missing(used) <= brace_room(in_staff, staves) and (
                staves == 2 or missing(used) > 0 or max(used) < MAX_VOICES)

        return [str(n) for n in range(base, top + 1) if n not in brace_used and fits(n)]

    for index, token in enumerate(tokens):
        partial = index == len(tokens) - 1 and not complete
        directly_in_brace = bool(stack) and stack[-1] == "}"
        if token.isdigit():
            wanted = numbers()
            if directly_in_brace and (previous not in ("open", "bar") or brace_staves >= 2):
                return False  # a brace holds two staves with `|` between them
            if not (token in wanted or (partial and any(number.startswith(token) for number in wanted))):
                return False
            if token in wanted:
                voices += 1
                if "}" in stack:
                    brace_used.add(int(token))
                    brace_staves += directly_in_brace
            if stack and stack[-1] == ")":
                staff_voices += 1
                if staff_voices > MAX_STAFF_VOICES:
                    return False  # abcm2ps draws at most four voices on one staff
            previous = "item"
        elif token in _SCORE_OPEN:  # brackets hold braces and parentheses, braces hold parentheses
            inner = _SCORE_RANK[token]
            if stack and _SCORE_RANK[_SCORE_PAIR[stack[-1]]] <= inner:
                return False
            if directly_in_brace:
                if previous not in ("open", "bar") or brace_staves >= 2 or not numbers(opening=True):
                    return False
                brace_staves += 1
            elif token == "{":
                brace_used, brace_staves = set(), 0
                if voices + 2 > MAX_VOICES:
                    return False  # no room for two staves
            elif not numbers(opening=True):
                return False
            stack.append(_SCORE_OPEN[token])
            staff_voices = 0
            previous = "open"
        elif token and token in ")]}":
            if not stack or stack.pop() != token or previous != "item":
                return False
            if token == ")" and "}" in stack and (missing(brace_used) > brace_room(None, brace_staves) or (
                    brace_staves == 1 and not numbers(opening=True))):
                return False  # the numbers left out no longer fit, or no number is left for the second staff
            if token == "}" and (brace_staves != 2 or missing(brace_used)):
                return False
            previous = "item"
        elif token == "|":
            if previous != "item" or not stack or stack[-1] == ")" or not numbers(opening=True):
                return False  # between the staves of a bracket or brace, never inside a parenthesis
            if directly_in_brace and brace_staves != 1:
                return False
            previous = "bar"
        elif not (partial and token == ""):
            return False
    if complete:
        return not stack and voices > 0 and previous == "item"
    if (previous != "item" or tokens[-1] == "") and voices >= MAX_VOICES and not stack:
        return False  # a space (or a bar) after the last voice that can be named, with nothing left to close
    # close every group, name one more voice, and the numbers a brace group left out
    reserve = 2 * len(stack) + (0 if previous == "item" else 4) + 4 * missing(brace_used)
    return len(line) + reserve <= MAX_SCORE_LINE


@dataclass(frozen=True)
class _Ends:
    """Bar lengths a voice's bar may end at: any in (0, upto] (line 0's first voice), or exactly one of `exact`."""

    upto: Fraction | None = None
    exact: tuple[Fraction, ...] = ()

    def reachable(self, elapsed: Fraction, grid: Fraction) -> bool:
        """Some end ≥ elapsed lies a whole number of grid steps away."""
        return _reachable(self, elapsed, grid)

    def _reachable(self, elapsed: Fraction, grid: Fraction) -> bool:
        if self.upto is not None:
            return elapsed <= self.upto and (self.upto - elapsed) % grid == 0
        return any(end >= elapsed and (end - elapsed) % grid == 0 for end in self.exact)

    def room(self, elapsed: Fraction) -> Fraction:
        """The most time left for more music."""
        return _room(self, elapsed)

    def _room(self, elapsed: Fraction) -> Fraction:
        if self.upto is not None:
            return self.upto - elapsed
        return max((end - elapsed for end in self.exact), default=Fraction(-1))

    def done(self, elapsed: Fraction) -> bool:
        if self.upto is not None:
            return 0 < elapsed <= self.upto
        return elapsed in self.exact


@lru_cache(maxsize=65536)
def _room(ends: _Ends, elapsed: Fraction) -> Fraction:
    return ends._room(elapsed)


@lru_cache(maxsize=65536)
def _reachable(ends: _Ends, elapsed: Fraction, grid: Fraction) -> bool:
    return ends._reachable(elapsed, grid)


@lru_cache(maxsize=65536)
def _length_fits(length: str, ends: _Ends, elapsed: Fraction, unit: Fraction, grid: Fraction, tuplet_left: int,
                 tuplet_length: Fraction | None, tuplet_ratio: Fraction, broken: Fraction | None,
                 shortest: Fraction = Fraction(0), broken_length: Fraction = Fraction(0)) -> bool:
    """Some allowed length that starts with `length` (and is longer than `shortest` units) fits the bar (tuplet
    notes: all of one length)."""
    if length not in _length_prefixes():
        return False
    values = [value for text, value in LENGTHS.items()
              if text.startswith(length) and value > shortest and value * unit >= MIN_DURATION]
    if tuplet_left:
        if tuplet_length is not None:
            values = [v for v in values if v * unit == tuplet_length]
        return any(ends.reachable(elapsed + tuplet_left * v * unit * tuplet_ratio, grid)
                   and (v * unit * tuplet_ratio * MUSICXML_TICKS).denominator == 1 for v in values)
    factor = broken if broken is not None else 1
    if broken is not None:  # abc2midi: both notes of a broken rhythm have one written length
        values = [value for value in values if value * unit == broken_length]
    for value in values:
        duration = value * unit * factor
        if duration % grid == 0 and ends.reachable(elapsed + duration, grid):
            return True
    return False


class StrictDecoder:
    """The constraint state of one piece: `mask(logits, top_k, position)` before a character is sampled at patch
    position `position`, `accept(char, position)` after it is written."""

    def __init__(self, context: str = "", max_bars: int | None = None) -> None:
        self.max_bars = max_bars
        self.disabled: str | None = None
        self.lenient = False
        self.phase = "header"
        # header
        self.line = ""
        self.prompt_lines = 0
        self.model_lines = 0
        self.header: tuple[str, ...] = ()
        self.seen: frozenset[str] = frozenset()
        self.score_ids: tuple[str, ...] | None = None
        self.voices: tuple[str, ...] = ()
        self.unit = Fraction(1, 8)
        self.meter = Fraction(1)
        self.key_text = "C"
        # body: lines
        self.grid = self.unit / 8
        self.readers: dict[str, VoiceReader] = {}
        self.body_order: list[str] = []
        self.line_index = 0
        self.remaining_lines: int | None = None
        self.literal: tuple[str, ...] = ()
        self.literal_text = ""
        self.after_literal = ""
        self.digits = ""
        self.written: tuple[str, ...] = ()
        self.first_end: Fraction | None = None
        self.pickup: Fraction | None = None
        self.line_barline: str | None = None
        self.left_barline: str | None = None
        self.repeat_open = False
        self.barline_at_unit_start = False
        self.barline_after_eos = False
        # body: the voice being written
        self.voice: str | None = None
        self.reader: VoiceReader | None = None
        self.lexer = Lexer()
        self.ends = _Ends()
        self.content_empty = True
        self.token_opens_bar = False
        """The pending token is the first of the voice's bar (where line 0 may restate the key)."""
        self.needs_left = False
        self.restated_key = False
        self.previous = ""
        self.counters_given = False
        """The line counts came with the given score (a continuation), so the piece may end before they run out."""
        self.given_lines = 0
        if context:
            self._replay(context)

    # -- public ----------------------------------------------------------------------------------------------
    def copy(self) -> StrictDecoder:
        clone = StrictDecoder.__new__(StrictDecoder)
        clone.__dict__.update(self.__dict__)
        if self.reader is not None:
            clone.reader = self.reader.copy()
        clone.lexer = self.lexer.copy()
        return clone

    def allows(self, char: int, position: int) -> bool:
        """True when `char` may be written at `position` of the current patch."""
        if self.disabled:
            return True
        phase = self.phase
        if 32 <= char < 127:
            if phase == "content" and not self.needs_left:
                return self._content_allows(chr(char), position)
            if phase == "literal" and not (self.after_literal == "left"):
                candidate = self.literal_text + chr(char)
                return any(option.startswith(candidate) for option in self.literal)
            if phase == "header" and self.line and not self.lenient and char != 10:
                return self._header_prefix_ok(self.line + chr(char))
        return self.copy()._feed(char, position)

    def accept(self, char: int, position: int) -> None:
        """Advance over a written character (one the decoder allowed, or one the engine forced)."""
        self._closed = None
        if not self.disabled and not self._feed(char, position):
            self.disabled = f"{chr(char)!r} breaks the rules ({self.phase})"

    _closed: tuple | None = None

    def _content_allows(self, text: str, position: int) -> bool:
        """`allows` inside a voice's bar without copying the state: a character extends the pending token, or the
        pending token is read (once per step, on a copy of the reader) and the character starts the next one."""
        reader = self.reader
        assert reader is not None
        if self.lexer.extends(text):
            return self._partial_ok(self.lexer.buffer + text, reader)
        if text == "\n":
            return False
        if self._closed is None:
            closed = reader.copy() if self.lexer.buffer else reader
            restated = self.restated_key
            ok = True
            if self.lexer.buffer:
                token = self.lexer.pending()
                ok = token is not None and closed.read(token) is None and self._token_ok(token, closed) and \
                    self._fits(closed)
                restated = restated or (token is not None and token.kind == "field")
            self._closed = (ok, closed, restated)
        ok, closed, restated = self._closed
        if not ok:
            return False
        if text in "|:":
            return self._bar_complete(closed) and any(option.startswith(text) for option in self._barline_options(
                closed)) and (position == 0 or self._line_may_end())
        if not is_prefix(text):
            return False
        saved = self.restated_key
        self.restated_key = restated
        try:
            return self._start_ok(text, closed)
        finally:
            self.restated_key = saved

    def choose(self, candidates: list[int], position: int) -> list[int]:
        """The allowed characters among `candidates` (the sampler's top-k, most likely first)."""
        return [char for char in candidates if self.allows(char, position)]

    def fallback(self, order: list[int], position: int) -> list[int]:
        """When no candidate is allowed: every allowed character, in the model's order (`order`: all ids, most
        likely first). Empty only if the rules have a hole; then the decoder stands aside for this piece."""
        allowed = [char for char in order if self.allows(char, position)]
        if not allowed:
            self.disabled = f"no character allowed ({self.phase})"
        return allowed

    # -- replaying a given context -----------------------------------------------------------------------------
    def _replay(self, context: str) -> None:
        """Read the given text (prompt, or a score to continue) with the rules relaxed where a given score may
        differ from what the decoder writes (any key or meter ABC defines); stand aside if its music breaks them."""
        self.lenient = True
        lines = context.split("\n")
        self.counters_given = any(line.startswith("[r:") for line in lines)
        for number, line in enumerate(lines):
            for index, char in enumerate(line):
                if not self._feed(ord(char), 0 if index == 0 else 1):
                    self.disabled = f"the given text breaks the rules near {line[:60]!r}"
                    return
            if number < len(lines) - 1 and line:
                if not self._feed(ord("\n"), 1) or not self._feed(EOS_ID, 1):
                    self.disabled = f"the given text breaks the rules near {line[:60]!r}"
                    return
        self.given_lines = self.line_index
        self.lenient = False

    # -- one character -----------------------------------------------------------------------------------------
    def _feed(self, char: int, position: int) -> bool:
        phase = self.phase
        if phase == "header":
            return self._header(char, position)
        if phase == "eol":  # after a body line's newline: its EOS, or (patch full) the next line
            if position == 0:
                return self._line_start(char)
            if char == EOS_ID:
                self.phase = "line_start"
                return True
            return False
        if phase == "line_start":
            return position == 0 and self._line_start(char)
        if phase == "end_patch":
            return char == EOS_ID
        if char == EOS_ID:
            return self._eos(position)
        if char < 32 and char != 10 or char >= 127:
            return False
        text = chr(char)
        if phase == "literal":
            return self._literal(text)
        if phase == "digits":
            return self._digits(text)
        if phase == "content":
            return self._content(text, position)
        if phase == "barline":
            return self._barline(text)
        if phase == "unit_barline":  # the unit after an EOS starts with the voice's barline
            return position == 0 and text in "|:" and self._begin_barline(text, at_unit_start=True, after_eos=True)
        return False

    # -- header ------------------------------------------------------------------------------------------------
    def _header_state(self) -> tuple:
        """Which header lines may come next, in the order abc2midi needs: `%end`; `%%score`; `L:`, `M:`, `Q:` in
        any order; `K:` (which ends an ABC header, so L and M come first); then `V:1`, `V:2` … (in `%%score` order)"""
        seen = self.seen
        key = "K" in seen
        next_voice = None
        if key and len(self.voices) < MAX_VOICES and (
                self.score_ids is None or len(self.voices) < len(self.score_ids)):
            # voices are defined in the order `%%score` names them (the training scores' order)
            next_voice = str(len(self.voices) + 1) if self.score_ids is None else self.score_ids[len(self.voices)]
        fields = not key and not self.voices
        return (self.prompt_lines > 0 and "end" not in seen, "score" not in seen and fields and not seen & {"L", "M",
                "Q"}, fields and "L" not in seen, fields and "M" not in seen, fields and "Q" not in seen,
                not key and {"L", "M"} <= seen, next_voice)

    def _header(self, char: int, position: int) -> bool:
        if char == EOS_ID:  # right after a header line's newline
            return self.line == "" and position > 0 and bool(self.header)
        if char >= 127 or (char < 32 and char != 10):
            return False
        text = chr(char)
        if self.line == "":
            if position != 0:
                return False
            if text == "[":
                if not self._header_complete():
                    return False
                self._begin_body()
                return self._line_start(char)
        if text == "\n":
            return bool(self.line) and self._header_line(self.line)
        line = self.line + text
        if not self.lenient and not self._header_prefix_ok(line):
            return False
        self.line = line
        return True

    def _header_prefix_ok(self, line: str) -> bool:
        if self.model_lines >= MAX_HEADER_LINES:
            return False
        state = self._header_state()
        if state[1] and score_line_ok(line, complete=False):
            return True
        return _header_patterns(state).fullmatch(line, partial=True) is not None

    def _header_line(self, line: str) -> bool:
        """A header line is complete: check it (the decoder's own lines) and record what it sets."""
        if not self.lenient:
            state = self._header_state()
            if not (state[1] and score_line_ok(line, complete=True)) and \
                    _header_patterns(state).fullmatch(line) is None:
                return False
            self.model_lines += 1
        seen = set(self.seen)
        if line.startswith("%%score"):
            ids = tuple(re.findall(r"[A-Za-z0-9_]+", line[7:]))
            seen.add("score")
            self.score_ids = ids
        elif line == "%end":
            seen.add("end")
        elif line.startswith("%"):
            if self.lenient and not self.header or all(h.startswith("%") and h != "%end" for h in self.header):
                self.prompt_lines += 1
        elif len(line) > 1 and line[1] == ":":
            name, value = line[0], line[2:].strip()
            if name == "V":
                vid = value.split()[0] if value.split() else ""
                if not vid or vid in self.voices:
                    return False
                self.voices = self.voices + (vid,)
            elif name in "LMQK":
                seen.add(name)
                if name == "K":
                    try:
                        parse_key(value)
                    except ValueError:
                        return False
                    self.key_text = value
                elif name == "M":
                    if meter_length(value) is None:
                        return False
                    self.meter = meter_length(value)
                elif name == "L":
                    self.unit = unit_length(value)
        elif not self.lenient:
            return False
        self.header = self.header + (line,)
        self.seen = frozenset(seen)
        self.line = ""
        return True

    def _header_complete(self) -> bool:
        if "K" not in self.seen or "M" not in self.seen or not self.voices:
            return False
        if self.lenient:
            return True
        return (self.prompt_lines == 0 or "end" in self.seen) and (
            self.score_ids is None or len(self.voices) == len(self.score_ids))

    def _begin_body(self) -> None:
        self.grid = max(self.unit / 8, MIN_DURATION)  # every length the decoder writes is a multiple of it
        key = parse_key(self.key_text)
        instruments = voice_instruments(list(self.header))
        definitions = {line.split()[0][2:]: line for line in self.header if line.startswith("V:") and line[2:]}
        readers = {}
        for vid in self.voices:
            low, high = instruments[vid].bounds() if vid in instruments else (21, 108)
            readers[vid] = VoiceReader(unit=self.unit, meter=self.meter, key=key.accidentals(),
                                       key_fifths=key.fifths, low=low, high=high,
                                       shift=octave_shift(definitions.get(vid, "")))
        self.readers = readers
        # body lines give the voices in number order, also when `%%score` (and so the header) has them otherwise
        self.body_order = voice_number_order(list(self.voices))
        self.phase = "line_start"

    # -- lines -------------------------------------------------------------------------------------------------
    def _line_start(self, char: int) -> bool:
        """The first character of a body line, or of the EOS patch after the last line (or, continuing a given
        score whose line counts we set, after any line that leaves no tie or slur open)."""
        if char == BOS_ID:
            early = self.counters_given and self.line_index >= self.given_lines and not self.lenient and not any(
                reader.tie is not None or reader.slurs for reader in self.readers.values())
            if self.remaining_lines == 0 or early:
                self.phase = "end_patch"
                return True
            return False
        if self.remaining_lines == 0:
            return False
        if char != ord("["):
            return False
        if self.remaining_lines is None:
            if self.line_index:
                return False
            self._set_literal(("[r:0/",), "digits")
        else:
            self._set_literal((f"[r:{self.line_index}/{self.remaining_lines - 1}]",), "voice_mark")
        self.written = ()
        self.first_end = None
        self.line_barline = None
        return self._literal("[")

    def _set_literal(self, options: tuple[str, ...], after: str) -> None:
        self.phase = "literal"
        self.literal = options
        self.literal_text = ""
        self.after_literal = after

    def _literal(self, text: str) -> bool:
        candidate = self.literal_text + text
        if not any(option.startswith(candidate) for option in self.literal):
            return False
        self.literal_text = candidate
        if candidate in self.literal:
            after = self.after_literal
            if after == "digits":
                self.phase = "digits"
                self.digits = ""
            elif after == "voice_mark":
                self._set_voice_mark_literal()
            elif after == "content":
                self._start_voice(candidate[3:-1])
            elif after == "left":
                self.left_barline = candidate
                if candidate in ("|:", "::"):
                    self.repeat_open = True
                self.needs_left = False
                self.phase = "content"
        return True

    def _digits(self, text: str) -> bool:
        """The j of line 0's `[r:0/j]`: how many lines follow (at least 1, fewer than --max-bars)."""
        limit = (self.max_bars - 1) if self.max_bars else 999
        if text == "]":
            if not self.digits:
                return False
            value = int(self.digits)
            if not self.lenient and not 1 <= value <= limit:
                return False
            self.remaining_lines = value + 1
            self._set_voice_mark_literal()
            return True
        if not text.isdigit() or len(self.digits) >= 3 or self.digits == "0":
            return False
        value = int(self.digits + text)
        if not self.lenient and not (1 <= value <= limit or 0 < value * 10 <= limit):
            return False  # no number this can still become lies in [1, limit]
        self.digits += text
        return True

    def _must_write(self) -> set[str]:
        """Voices this line cannot leave out: a tie waits for its note, or (on the last line) a slur for its end."""
        last_line = self.remaining_lines == 1
        return {vid for vid, reader in self.readers.items() if reader.tie is not None or (last_line and reader.slurs)}

    def _later_voices(self) -> list[str]:
        """Voices that may come next on this line: after the ones written, none skipped that must be written."""
        order = self.body_order
        start = order.index(self.written[-1]) + 1 if self.written else 0
        must = self._must_write()
        options = []
        for vid in order[start:]:
            options.append(vid)
            if vid in must:
                break
        return options

    def _line_may_end(self) -> bool:
        """No voice after the current one still has to be written on this line."""
        return self.lenient or not (self._must_write() & set(self._later_voices()))

    def _set_voice_mark_literal(self) -> None:
        self._set_literal(tuple(f"[V:{vid}]" for vid in self._later_voices()), "content")

    def _start_voice(self, vid: str) -> None:
        reader = self.readers[vid].copy()
        reader.begin_bar()
        self.readers = {**self.readers, vid: reader}
        self.voice, self.reader = vid, reader
        self.written = self.written + (vid,)
        self.lexer = Lexer()
        self.content_empty = True
        self.token_opens_bar = False
        self.restated_key = False
        self.previous = ""
        first = len(self.written) == 1
        line_zero = self.line_index == 0
        last_line = self.remaining_lines == 1
        self.needs_left = line_zero and not first and bool(self.left_barline)
        if not first:
            self.ends = _Ends(exact=(self.first_end,) if self.first_end is not None else ())
        elif line_zero and not last_line:
            self.ends = _Ends(upto=self.meter)
        elif last_line and self.pickup is not None:
            self.ends = _Ends(exact=(self.meter - self.pickup, self.meter))
        else:
            self.ends = _Ends(exact=(self.meter,))
        self.phase = "content"

    # -- the music of one voice's bar ------------------------------------------------------------------------
    def _content(self, text: str, position: int) -> bool:
        reader = self.reader
        assert reader is not None
        if self.needs_left and not self.lenient:
            return False  # the first voice opened line 0 with a barline: this one must too (EOS first)
        if self.lexer.extends(text):
            if not self._partial_ok(self.lexer.buffer + text, reader):
                return False
            self.lexer.feed(text)
        elif text in "|:":
            return self._close_token() and self._bar_complete(reader) and (position == 0 or self._line_may_end()) \
                and self._begin_barline(text, position == 0)
        elif text == "\n":
            return False
        else:
            if not self._close_token() or not is_prefix(text) or not self._start_ok(text, reader):
                return False
            self.lexer.feed(text)
            self.token_opens_bar = self.content_empty
            self.content_empty = False
        self.previous = text
        return True

    def _close_token(self) -> bool:
        """Read the pending token into the voice's reader (False when it is unfinished or breaks a rule)."""
        if not self.lexer.buffer:
            return True
        token = self.lexer.pending()
        if token is None:
            return False
        reader = self.reader
        assert reader is not None
        problem = reader.read(token)
        if token.kind == "field":
            self.restated_key = True
        if self.lenient:
            if problem is not None and problem[0] not in ("range", "duration", "token", "tie", "key"):
                return False
        elif problem is not None or not self._token_ok(token, reader) or not self._fits(reader):
            return False
        self.lexer = Lexer()
        return True

    def _token_ok(self, token: Token, reader: VoiceReader) -> bool:
        """Rules of the decoder beyond the reader's."""
        if token.kind == "slur_open":
            return reader.slurs <= 1  # abc2midi does not nest slurs
        if token.kind == "chord":
            members = [member.pitch_text for member, _ in chord_members(token.text)]
            return 2 <= len(members) == len(set(members))
        return True

    def _bar_complete(self, reader: VoiceReader) -> bool:
        if reader.open_problem() is not None or reader.waiting:
            return False
        if self.lenient:
            return True
        if not self.ends.done(reader.elapsed):
            return False
        return not (self.remaining_lines == 1 and (reader.tie is not None or reader.slurs))

    def _pending(self, reader: VoiceReader) -> Fraction:
        """Time that what is still open needs: the rest of a tuplet, or the note a broken rhythm, a decoration,
        a slur, a grace group or a tie (when the bar is not full) waits for."""
        if reader.tuplet_left:
            length = reader.tuplet_length if reader.tuplet_length is not None else self.grid
            return reader.tuplet_left * length * reader.tuplet_ratio
        if reader.broken is not None or reader.waiting or reader.grace:
            return self.grid
        if reader.tie is not None and not self.ends.done(reader.elapsed):
            return self.grid
        return Fraction(0)

    def _fits(self, reader: VoiceReader) -> bool:
        """The bar can still end well, whatever is open."""
        return self.ends.reachable(reader.elapsed + self._pending(reader), self.grid)

    def _start_ok(self, text: str, reader: VoiceReader) -> bool:
        """May a new token start with `text` here?"""
        if self.lenient:
            return True
        room = self.ends.room(reader.elapsed) >= self.grid or bool(reader.tuplet_left)
        tie = reader.tie is not None
        target = reader.tie_text or ""
        if reader.last == "short_decoration" and not (text in "^_=ABCDEFGabcdefgzx" or text in SHORT_DECORATIONS
                                                      or text == "[" and not reader.trill):
            return False  # a one-letter decoration stands right before its note (abc2midi)
        if text in "^_=ABCDEFGabcdefg":
            return room and (not tie or target.startswith(text)) and self._partial_ok(text, reader)
        if text in "zx":  # no trill on a rest: abc2midi would keep it for every later chord
            return room and not tie and not reader.grace and not reader.trill and reader.broken is None \
                and self._partial_ok(text, reader)
        if text == "[":
            if self.line_index == 0 and self.content_empty and not self.restated_key and not tie:
                return True  # a chord, or `[K:…]` restating the header key
            # no chord in a tuplet: abc2midi compares the lengths of a chord's notes, not the one after it
            return room and (not tie or target.startswith("[")) and not reader.trill and not reader.tuplet_left
        if text == " ":
            return self.previous != " "
        if text == "-":
            if reader.last not in ("note", "chord") or tie or reader.tuplet_left or reader.grace or reader.spaced \
                    or reader.last_staccato or reader.last_trill or reader.last_breath:
                return False  # a tie follows its note directly, and never a staccato, trilled or breath-marked one
            return self.ends.room(reader.elapsed) >= self.grid or (
                self.ends.done(reader.elapsed) and self.remaining_lines != 1)
        if text == "(":  # a slur (at most two open) or a tuplet
            if not room or reader.tuplet_left or reader.broken is not None or tie or reader.grace \
                    or reader.waiting >= MAX_WAITING:
                return False
            return reader.slurs < 1 or any(self._partial_ok("(" + p, reader) for p in TUPLETS)
        if text == ")":
            return reader.slurs > 0 and reader.last in ("note", "chord", "rest") and not reader.tuplet_left
        if text == "!" and not room:  # a full bar: only the end of an open span, which waits for no note
            return bool(reader.spans) and not reader.grace and reader.last in ("note", "chord", "rest")
        if text in "!\"{" or text in SHORT_DECORATIONS:
            if not room or reader.waiting >= MAX_WAITING or reader.grace or (text == "T" and tie) \
                    or (text == "." and reader.broken is not None):
                return False  # no trill while a tie waits (the tied note may be a chord, which cannot have one);
                #               no staccato in a broken rhythm (abc2midi cannot apply it)
            return text != "{" or not (tie or reader.tuplet_left or reader.broken is not None)
        if text == ">":
            if reader.last not in ("note", "chord") or reader.tuplet_left or reader.broken is not None or tie \
                    or reader.last_staccato or reader.last_breath or reader.last_broken:
                return False
            half = reader.last_duration / 2  # the first note grows by half, the second (same length) is halved
            return half % self.grid == 0 and is_notatable(3 * half) and is_notatable(half) \
                and self.ends.reachable(reader.elapsed + 2 * half, self.grid)
        return False

    def _partial_ok(self, text: str, reader: VoiceReader) -> bool:
        """May the current token read `text` so far?"""
        if self.lenient:
            return True
        first = text[0]
        if first in "^_=ABCDEFGabcdefg":
            return self._partial_note(text, reader)
        if first in "zx":
            return self._partial_length(text[1:], reader)
        if first == "[":
            return self._partial_bracket(text, reader)
        if first == "!":
            name = text[1:]
            if reader.tie is not None and "trill".startswith(name[:5]) and name:
                return False  # no trill while a tie waits (the tied note may be a chord, which cannot have one)
            if reader.broken is not None and "breath".startswith(name[:6]) and name:
                return False  # no breath mark on a broken rhythm's second note (abc2midi cannot apply it)
            room = self.ends.room(reader.elapsed) >= self.grid or reader.tuplet_left
            options = [option for option in (DECORATIONS if room else SPAN_ENDS) if _span_ok(option, reader.spans)]
            if name.endswith("!"):
                return name[:-1] in options
            return any(option.startswith(name) for option in options)
        if first == '"':
            if len(text) == 2:
                return text[1] in "^_"
            if text.endswith('"'):
                return len(text) > 3
            return len(text) < MAX_ANNOTATION and (text[-1].isalnum() or text[-1] in " .,'-()")
        if first == "{":
            return self._partial_grace(text, reader)
        if first == "(":
            if len(text) != 2 or text[1] not in TUPLETS:
                return False
            p = int(text[1])
            return _length_fits("", self.ends, reader.elapsed, self.unit, self.grid, p, None,
                                Fraction(TUPLETS[text[1]], p), None)
        return False

    def _pitch_ok(self, accidental: str, letter: str, octave: str, reader: VoiceReader, complete: bool,
                  above: tuple[int, int] | None = None, headroom: bool = False) -> bool:
        """The written pitch lies in the part's range, or, still being written, octave marks can bring it there.
        In a chord, each note lies above the last one, `above` = (its MIDI pitch, its diatonic step), and the
        first leaves room for a second (`headroom`: two semitones below the top of the range)."""
        low, above_step = (reader.low, -1000) if above is None else (max(reader.low, above[0] + 1), above[1])
        high = reader.high - 2 * headroom
        mark = "," if letter.isupper() else "'"  # each more octave mark moves the note an octave (down / up)
        while True:
            note = note_parts(f"{accidental}{letter}{octave}")
            # the bar's accidentals hold for one octave only, so each octave is computed, not shifted by 12
            pitch = midi_pitch(note, reader.key, dict(reader.accidentals)) + reader.shift
            if reader.tie is not None and reader.elapsed == 0 and not accidental:
                carried = {(n.letter, n.octave): p for n, p in zip(reader.tie_notes, reader.tie)}
                pitch = carried.get((letter, octave), pitch)
            if low <= pitch <= high and diatonic_step(note) > above_step:
                return True
            if complete or len(octave) > 4 or (mark == "," and (pitch < low or diatonic_step(note) <= above_step)) \
                    or (mark == "'" and pitch > high):
                return False
            octave += mark

    def _partial_note(self, text: str, reader: VoiceReader) -> bool:
        match = _NOTE_PREFIX.fullmatch(text)
        if match is None:
            return False
        accidental, letter, octave, length = match.group(1) or "", match.group(2), match.group(3), match.group(4)
        if reader.tie is not None:  # the tie's note, written again exactly (then its length)
            pitch_text = f"{accidental}{letter or ''}{octave}"
            target = reader.tie_text or ""
            if not length:
                return target.startswith(pitch_text) and (pitch_text != target or self._partial_length("", reader))
            return target == pitch_text and self._partial_length(length, reader)
        if letter is None:  # an accidental so far: some letter (or a double accidental) must fit after it
            return any(self._partial_note(text + option, reader) for option in _after_accidental(accidental))
        if not self._pitch_ok(accidental, letter, octave, reader, complete=bool(length)):
            return False
        return self._partial_length(length, reader)

    def _partial_length(self, length: str, reader: VoiceReader) -> bool:
        """Some allowed length that starts with `length` fits the bar (tuplet notes: all of one length; after
        grace notes, longer than a quarter of theirs)."""
        shortest = reader.grace_length / GRACE_SHARE if reader.grace else Fraction(0)
        return _length_fits(length, self.ends, reader.elapsed, self.unit, self.grid, reader.tuplet_left,
                            reader.tuplet_length, reader.tuplet_ratio, reader.broken, shortest, reader.broken_length)

    def _partial_bracket(self, text: str, reader: VoiceReader) -> bool:
        if len(text) >= 2 and text[1] == "K":
            return self.line_index == 0 and self.token_opens_bar and any(
                option.startswith(text) for option in _restatements(self.key_text))
        closed = "]" in text
        inside = text[1:text.index("]")] if closed else text[1:]
        if reader.tie is not None:  # the tied chord, written again exactly (then its length)
            target = reader.tie_text or ""
            if not closed:
                return target.startswith(text)
            if not text.startswith(target):
                return False
            return self._partial_length(text[len(target):], reader)
        if _CHORD_MEMBER.sub("", inside) not in ("", "^", "_", "=", "^^", "__"):
            return False  # no lengths or ties inside a chord: the chord's length comes after it
        members = _CHORD_MEMBER.findall(inside)
        if len(members) > MAX_CHORD:
            return False
        # A chord's notes go up, each a higher pitch on a higher staff step (as xml2abc writes them; `[c^c]`
        # would make a tie's repeated chord sound different, since `^c` changes the next `c`).
        below: tuple[int, int] | None = None
        for index, (accidental, letter, octave) in enumerate(members):
            complete = closed or index < len(members) - 1 or not inside.endswith(letter + octave)
            if not self._pitch_ok(accidental, letter, octave, reader, complete, above=below,
                                  headroom=index == 0):
                return False
            note = note_parts(f"{accidental}{letter}{octave}")
            below = (midi_pitch(note, reader.key, dict(reader.accidentals)) + reader.shift, diatonic_step(note))
        if not closed:
            if inside.endswith(("^", "_", "=")) or not members:  # some note must fit next
                return len(members) < MAX_CHORD and any(self._partial_bracket(text + option, reader)
                                                        for option in _after_accidental(_trailing_accidental(inside)))
            return self._partial_length("", reader)
        return len(members) >= 2 and self._partial_length(text[text.index("]") + 1:], reader)

    def _partial_grace(self, text: str, reader: VoiceReader) -> bool:
        closed = text.endswith("}")
        inside = text[1:-1] if closed else text[1:]
        inside = inside[1:] if inside.startswith("/") else inside
        notes = list(_GRACE_NOTE.finditer(inside))
        trailing = "" if closed else _trailing_accidental(inside)
        if "".join(match.group(0) for match in notes) + trailing != inside:
            return False
        if len(notes) + bool(trailing) > MAX_GRACE or (closed and not notes):
            return False
        if trailing:  # some note must fit after the accidental
            return any(self._partial_grace(text + option, reader) for option in _after_accidental(trailing))
        for index, match in enumerate(notes):
            complete = closed or index < len(notes) - 1 or bool(match.group(4))
            if not self._pitch_ok(match.group(1) or "", match.group(2), match.group(3), reader, complete):
                return False
            if match.group(4) not in ("", "/", "//"):
                return False  # short grace notes only: abc2midi takes a quarter of their length from the note
        # the note they lead to must still fit, longer than a quarter of them (the last one may still shorten)
        total = sum((length_value(m.group(4)) if closed or index < len(notes) - 1 else Fraction(1, 4)
                     for index, m in enumerate(notes)), Fraction(0))
        return _length_fits("", self.ends, reader.elapsed, self.unit, self.grid, 0, None, Fraction(1), None,
                            total / GRACE_SHARE)

    # -- barlines and the end of a voice's bar -----------------------------------------------------------------
    def _barline_options(self, reader: VoiceReader | None = None) -> tuple[str, ...]:
        reader = reader or self.reader
        if self.lenient:
            return _GIVEN_BARLINES
        if self.line_barline is not None:
            return (self.line_barline,)
        if self.remaining_lines == 1:
            return (":|",) if self.repeat_open else ("|]",)
        pickup = self.pickup is not None or (self.line_index == 0 and reader is not None
                                             and reader.elapsed < self.meter)
        options = ("|", "||")
        if not pickup:
            options += (":|", "::") if self.repeat_open else ("|:",)
        return options

    def _begin_barline(self, text: str, at_unit_start: bool, after_eos: bool = False) -> bool:
        self.phase = "barline"
        self.literal = self._barline_options()
        self.literal_text = ""
        self.barline_at_unit_start = at_unit_start or self.lenient
        self.barline_after_eos = after_eos
        return self._barline(text)

    def _barline(self, text: str) -> bool:
        candidate = self.literal_text + text
        if any(option.startswith(candidate) for option in self.literal):
            self.literal_text = candidate
            return True
        if self.literal_text not in self.literal or not self._finish_voice_bar(self.literal_text):
            return False
        if text == "\n":
            if self.barline_after_eos and not self.lenient:
                return False  # after an EOS the unit holds the barline and then the next voice
            if not self.lenient and self._must_write() & set(self._later_voices()):
                return False
            return self._end_line()
        if text == "[" and self.barline_at_unit_start and self._later_voices():
            self._set_voice_mark_literal()
            return self._literal("[")
        return False

    def _finish_voice_bar(self, barline: str) -> bool:
        """The voice's bar is closed by `barline`: the line's length, barline and repeats are settled."""
        reader = self.reader
        assert reader is not None
        if self.first_end is None:
            self.first_end = reader.elapsed
            if self.line_index == 0 and reader.elapsed < self.meter:
                self.pickup = reader.elapsed
        if self.line_barline is None:
            self.line_barline = barline
            if barline in ("|:", "::"):
                self.repeat_open = True
            elif barline.startswith(":|"):
                self.repeat_open = False
        return self.lenient or barline == self.line_barline

    def _eos(self, position: int) -> bool:
        """EOS inside a line ends the voice's unit; the next unit starts with the barline."""
        if self.phase != "content" or position == 0:
            return False
        if self.content_empty and self.line_index == 0 and not self.lexer.buffer:
            # line 0 opens with a left barline (`|:`), in a unit of its own, in every voice or in none
            first = len(self.written) == 1
            if first and self.repeat_open:
                return False
            if not first and not self.needs_left:
                return False
            options = ("|:",) if first else (self.left_barline or "",)
            self._set_literal(options, "left")
            if first:
                self.ends = _Ends(exact=(self.meter,))
            return True
        if self.needs_left or not self._close_token() or not self._bar_complete(self.reader) \
                or not self._later_voices():
            return False
        self.phase = "unit_barline"
        return True

    def _end_line(self) -> bool:
        if self.remaining_lines is None:
            return False
        self.line_index += 1
        self.remaining_lines -= 1
        self.phase = "eol"  # then the EOS, and the next line, or (none left) the EOS patch
        return True


_NOTE_PREFIX = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])?([,']*)(\d*(?:/\d*)*)")
_CHORD_MEMBER = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])([,']*)")
_GRACE_NOTE = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])([,']*)(\d*(?:/\d*)*)")
_GIVEN_BARLINES = tuple(sorted({"|", "||", "|]", "[|", "|:", ":|", "::", ":|]", ":||", "||:", ":|:", "[|:"}
                               | {f"{b}{v}" for b in ("|", ":|") for v in "1234"}))


def _after_accidental(accidental: str) -> str:
    """What may follow an accidental being written: a note letter, or the second sign of `^^` / `__`."""
    return "CDEFGABcdefgab" + (accidental if accidental in ("^", "_") else "")


def _trailing_accidental(text: str) -> str:
    match = re.search(r"(\^\^|\^|__|_|=)$", text)
    return match.group(0) if match else ""


def sample_strict(logits: Tensor, decoders: list[StrictDecoder | None], settings: SamplingSettings,
                  uniforms: Tensor | None, positions: list[int]) -> list[int]:
    """Draw one character per row of `logits` [B, V], keeping strictly decoded rows valid.

    A row is sampled as `notagen.generation.sampling.sample` would; when its decoder refuses the character, it is
    drawn again among the allowed survivors of the model's own top-k / top-p. The second draw uses the first
    uniform rescaled within the refused character's share (itself uniform and independent of the first choice), so
    the result follows the model's distribution conditioned on validity exactly, and the common case checks one
    character. When no survivor is allowed, the allowed characters among the top-k are drawn from, else among all.
    Rows without a decoder (or whose decoder stands aside) are sampled as usual.
    """
    rows = [i for i, decoder in enumerate(decoders) if decoder is not None and not decoder.disabled]
    if settings.greedy:
        tokens = sample(logits, settings, uniforms).tolist()
        if not rows:
            return tokens
        ids = torch.argsort(logits[rows], dim=-1, descending=True).tolist()
        for row, order in zip(rows, ids):
            decoder = decoders[row]
            assert decoder is not None
            best = next((char for char in order if decoder.allows(char, positions[row])), None)
            if best is None:
                decoder.fallback([], positions[row])
            else:
                tokens[row] = best
        return tokens
    probs, ids = filtered_distribution(logits, settings)
    if uniforms is None:
        uniforms = torch.rand(probs.size(0), device=probs.device)
    tokens = pick(probs, ids, uniforms).tolist()
    for row in rows:
        decoder = decoders[row]
        assert decoder is not None
        if decoder.allows(tokens[row], positions[row]):
            continue
        row_probs, row_ids = probs[row].tolist(), ids[row].tolist()
        refused = row_ids.index(tokens[row])
        low = sum(row_probs[:refused])
        share = row_probs[refused]
        u = min(max((float(uniforms[row]) * sum(row_probs) - low) / share, 0.0), 1.0) if share > 0 else 0.5
        allowed = [(char, p) for index, (char, p) in enumerate(zip(row_ids, row_probs))
                   if p > 0 and index != refused and decoder.allows(char, positions[row])]
        if allowed:
            total = sum(p for _, p in allowed)
            cumulative = 0.0
            tokens[row] = allowed[-1][0]
            for char, p in allowed:
                cumulative += p
                if u * total < cumulative:
                    tokens[row] = char
                    break
            continue
        # Nothing the model would sample fits: the allowed characters among its top-k, else among all.
        order = torch.argsort(logits[row], descending=True).tolist()
        wanted = min(settings.top_k if settings.top_k > 0 else CHECKED, len(order))
        chars = decoder.choose(order[:wanted], positions[row]) or decoder.fallback(order, positions[row])
        if not chars:
            continue
        masked = torch.full_like(logits[row], float("-inf"))
        masked[chars] = logits[row, chars] if torch.isfinite(logits[row, chars]).any() else 0.0
        tokens[row] = int(sample(masked.unsqueeze(0), settings, torch.tensor([u]))[0])
    return tokens


def write_through(decoder: StrictDecoder, context: str, text: str) -> tuple[list[int], int | None]:
    """Write `text` into `decoder` (which has read `context`) as the engine writes it: patch by patch, every
    character asked `allows` at its patch position, then accepted. Returns the character ids written (EOS marks
    the end of a unit) and the first one refused, or None when every character was allowed."""
    patchilizer = Patchilizer(patch_length=1 << 20)
    given = 1 + sum(len(patchilizer.unit_to_patches(line + "\n")) for line in context.split("\n") if line)
    written: list[int] = []
    for patch in patchilizer.encode_generate(context + text)[given:]:
        for position, char in enumerate(patch):
            if char == PAD_ID:
                break
            if not decoder.allows(char, position):
                return written, char
            decoder.accept(char, position)
            written.append(char)
            if char == EOS_ID:
                break
    return written, None


__all__ = ["CHECKED", "DECORATIONS", "LENGTHS", "METERS", "StrictDecoder", "sample_strict", "write_through"]
