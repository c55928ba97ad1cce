"""What ABC music means: keys, pitches, meters, lengths, and a reader that follows one voice token by token.

`VoiceReader` is the single place that knows how a voice's tokens (from `notagen.abc.lexer`) add up: note and rest
durations with tuplets and broken rhythm, pitches under the key signature and the bar's accidentals, ties, slurs,
grace groups and what a decoration or slur must be followed by. The strict checker reads whole pieces with it; the
constrained decoder reads the piece being written with it, one token at a time, and asks it what may come next;
the memorisation index reads bars of pitches and lengths with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from notagen.abc.lexer import (
    LexError,
    NoteText,
    Token,
    chord_length,
    chord_members,
    field_parts,
    length_value,
    note_parts,
    tokenize,
    tuplet_parts,
)

MUSICXML_TICKS = 4 * 2520
"""abc2xml writes durations in 1/2520 of a quarter note: a note must last a whole number of these."""
MAX_STAFF_VOICES = 4
"""Voices one staff may hold: abcm2ps stops with "Too many voices per staff" beyond four."""
GRACE_SHARE = 4
"""abc2midi plays grace notes in 1/4 of their written length, taken from the note they lead to ("Grace sequence
exceeds host note" when that note is not longer)."""
MAX_FIFTHS = 7
"""Key signatures beyond 7 sharps or flats (F-flat major, G-sharp major …) are not allowed: MIDI cannot store them
and notation programs refuse them; such keys are respelled enharmonically."""

LETTER_SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_SHARP_ORDER = "FCGDAEB"
_ACCIDENTAL_SEMITONES = {"": None, "=": 0, "^": 1, "^^": 2, "_": -1, "__": -2}
# Fifths between a mode's tonic and the major key with the same signature.
MODE_FIFTHS = {"maj": 0, "ion": 0, "min": -3, "aeo": -3, "mix": -1, "dor": -2, "phr": -4, "lyd": 1, "loc": -5}
CLEFS = ("treble", "bass", "alto", "tenor", "perc", "none")
_KEY_TONIC = re.compile(r"([A-G])([#b]?)\s*([A-Za-z]*)$")
_CLEF_WORD = re.compile(r"(?:clef=)?(treble|bass|alto|tenor|perc|percussion|none)(?:[+-]8|\d)?$", re.IGNORECASE)


class MusicError(ValueError):
    """A field value that ABC does not define (an unknown key or meter)."""


@dataclass(frozen=True)
class Key:
    """A `K:` field: the key signature it sets (None for a clef-only field such as `[K:treble]`) and its clef."""

    tonic: str | None
    mode: str
    fifths: int | None
    """Sharps (> 0) or flats (< 0) of the signature; None when the field sets no key."""
    clef: str | None = None

    @property
    def sets_key(self) -> bool:
        return self.fifths is not None

    def accidentals(self) -> dict[str, int]:
        """Letter → semitone offset the signature gives it (`{'F': 1, 'C': 1}` for D major)."""
        if not self.fifths:
            return {}
        if self.fifths > 0:
            return {letter: 1 for letter in _SHARP_ORDER[:self.fifths]}
        return {letter: -1 for letter in _SHARP_ORDER[::-1][:-self.fifths]}

    @property
    def name(self) -> str:
        """`G`, `F#m`, `Ddor` (the mode is left out for major)."""
        if self.tonic is None:
            return "none"
        return self.tonic + {"maj": "", "min": "m"}.get(self.mode, self.mode)


NO_KEY = Key(None, "maj", 0)


@lru_cache(maxsize=1024)
def parse_key(value: str) -> Key:
    """Parse a `K:` value: `G`, `F#m`, `Bb minor`, `E dor`, `none`, `treble`, `D clef=bass`. Raises MusicError.

    Explicit accidentals (`K:D exp ^f`) and other keyword arguments are not supported (xml2abc never writes them).
    """
    words = value.split()
    clef: str | None = None
    rest: list[str] = []
    for word in words:
        match = _CLEF_WORD.fullmatch(word)
        if match and (word.startswith("clef=") or not rest or not _KEY_TONIC.match(" ".join(rest))):
            if word.lower() == "none" and not rest and len(words) == 1:
                return Key(None, "maj", 0)  # `K:none`: no signature
            clef = match.group(1).lower()
            continue
        if "=" in word:
            raise MusicError(f"unsupported key parameter {word!r}")
        rest.append(word)
    if not rest:
        if clef is None:
            return Key(None, "maj", 0)
        return Key(None, "maj", None, clef)
    match = _KEY_TONIC.match(" ".join(rest))
    if match is None:
        raise MusicError(f"not a key: {value!r}")
    letter, accidental, mode_word = match.groups()
    mode = _mode(mode_word)
    fifths = _LETTER_FIFTHS[letter] + {"#": 7, "b": -7, "": 0}[accidental] + MODE_FIFTHS[mode]
    return Key(letter + accidental, mode, fifths, clef)


def _mode(word: str) -> str:
    lowered = word.lower()
    if lowered in ("", "major"):
        return "maj"
    if lowered in ("m", "minor"):
        return "min"
    if lowered[:3] in MODE_FIFTHS and len(lowered) >= 3:
        return lowered[:3]
    raise MusicError(f"unknown mode {word!r}")


def respell(key: Key) -> Key:
    """The enharmonic key with at most 7 sharps or flats (`G#` major → `Ab` major); other keys unchanged."""
    if key.fifths is None or abs(key.fifths) <= MAX_FIFTHS:
        return key
    fifths = key.fifths - 12 if key.fifths > 0 else key.fifths + 12
    tonic_fifths = fifths - MODE_FIFTHS[key.mode]
    names = {f: name for name, f in _major_names().items()}
    return Key(names[tonic_fifths], key.mode, fifths, key.clef)


@lru_cache(maxsize=1)
def _major_names() -> dict[str, int]:
    names = {}
    for letter, base in _LETTER_FIFTHS.items():
        for accidental, shift in (("", 0), ("#", 7), ("b", -7)):
            names[letter + accidental] = base + shift
    return names


@lru_cache(maxsize=1)
def key_values() -> frozenset[str]:
    """Every `K:` value the constrained decoder may write: tonic + mode (`G`, `Em`, `Emin`, `Bbdor` …) with at most
    7 sharps or flats. Minor is offered in both spellings: the training scores (converted from MusicXML) all write
    `Amin`, and with only `Am` allowed a model that wrote `Ami` was steered to `Amix`, a minor piece under a
    mixolydian signature."""
    values = set()
    for tonic, tonic_fifths in _major_names().items():
        for suffix, mode in (("", "maj"), ("m", "min"), ("min", "min"), ("dor", "dor"), ("mix", "mix"),
                             ("phr", "phr"), ("lyd", "lyd"), ("loc", "loc")):
            if abs(tonic_fifths + MODE_FIFTHS[mode]) <= MAX_FIFTHS:
                values.add(tonic + suffix)
    return frozenset(values)


@lru_cache(maxsize=256)
def meter_length(value: str | None) -> Fraction | None:
    """Length of a bar under an `M:` value in whole notes (`3/4` → 3/4, `C` → 1, `C|` → 1, `3+2/8` → 5/8);
    None for free meter (`none`) or anything unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value in ("C", "C|"):
        return Fraction(1)
    match = re.fullmatch(r"\(?([\d+]+)\)?\s*/\s*(\d+)", value)
    if not match:
        return None
    numerator = sum(int(part) for part in match.group(1).split("+") if part)
    denominator = int(match.group(2))
    return Fraction(numerator, denominator) if numerator and denominator else None


def unit_length(value: str | None, default: Fraction = Fraction(1, 8)) -> Fraction:
    """`L:` value → a Fraction of a whole note; anything unreadable → `default`."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not match or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        return default
    return Fraction(int(match.group(1)), int(match.group(2)))


def default_unit(meter: Fraction | None) -> Fraction:
    """ABC's default `L:` when the header has none: 1/16 below a meter of 0.75, else 1/8."""
    return Fraction(1, 16) if meter is not None and meter < Fraction(3, 4) else Fraction(1, 8)


def is_notatable(duration: Fraction) -> bool:
    """True for a duration one note head can show: 2^k or 3·2^k whole notes (plain or single-dotted), from a
    128th to a dotted breve. Notation programs refuse the others (abcm2ps: "Note too much dotted")."""
    if duration <= 0:
        return False
    for base in (duration, duration * Fraction(2, 3)):
        numerator, denominator = base.numerator, base.denominator
        if numerator == 1 and denominator & (denominator - 1) == 0 and denominator <= 128:
            return True
        if denominator == 1 and numerator in (1, 2):
            return True
    return False


def tuplet_time(p: int, meter: Fraction | None, compound: bool | None = None) -> int:
    """ABC's default q of `(p`: 2→3, 3→2, 4→3, 6→2, 8→3; 5, 7, 9: 3 in compound meters, else 2."""
    defaults = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}
    if p in defaults:
        return defaults[p]
    if compound is None:
        compound = meter is not None and meter.numerator % 3 == 0 and meter.numerator > 3
    return 3 if compound else 2


def midi_pitch(note: NoteText, key: dict[str, int], bar: dict[tuple[str, int], int]) -> int:
    """MIDI number of a written note (middle C = `C` = 60) under key signature `key` and the bar's accidentals
    `bar` ((letter, octave) → offset). An explicit accidental is recorded in `bar` for the rest of the bar."""
    letter = note.letter.upper()
    octave = (5 if note.letter.islower() else 4) + note.octave.count("'") - note.octave.count(",")
    offset = _ACCIDENTAL_SEMITONES[note.accidental]
    if offset is not None:
        bar[(letter, octave)] = offset
    else:
        offset = bar.get((letter, octave), key.get(letter, 0))
    return 12 * (octave + 1) + LETTER_SEMITONES[letter] + offset


def diatonic_step(note: NoteText) -> int:
    """Staff position of a written note, in diatonic steps from middle C (`C` = 0, `D` = 1, `c` = 7, `C,` = -7)."""
    octave = (1 if note.letter.islower() else 0) + note.octave.count("'") - note.octave.count(",")
    return "CDEFGAB".index(note.letter.upper()) + 7 * octave


KNOWN_DECORATIONS = frozenset({
    # ABC 2.1 §4.14 and abcm2ps's own: the decorations abcm2ps draws (it reports the others as "not defined")
    "trill", "trill(", "trill)", "lowermordent", "uppermordent", "mordent", "pralltriller", "roll", "turn", "turnx",
    "invertedturn", "invertedturnx", "arpeggio", ">", "accent", "emphasis", "fermata", "invertedfermata", "tenuto",
    "0", "1", "2", "3", "4", "5", "+", "plus", "snap", "slide", "wedge", "upbow", "downbow", "open", "thumb",
    "breath", "pppp", "ppp", "pp", "p", "mp", "mf", "f", "ff", "fff", "ffff", "sfz",
    "crescendo(", "<(", "crescendo)", "<)", "diminuendo(", ">(", "diminuendo)", ">)", "segno", "coda", "D.S.",
    "D.C.", "dacoda", "dacapo", "fine", "shortphrase", "mediumphrase", "longphrase",
    "xstem", "beambr1", "beambr2", "beamon", "stemless", "8va(", "8va)", "8vb(", "8vb)", "ped", "ped-up",
    "marcato", "^", "dot", "gmark", "invisible",
})


def span_of(name: str) -> str | None:
    """The span a decoration opens or closes (`<(` and `crescendo)` → `<`, `ped-up` → `ped`); None for others."""
    if name in ("ped", "ped-up"):
        return "ped"
    if name.endswith(("(", ")")):
        return {"crescendo": "<", "diminuendo": ">"}.get(name[:-1], name[:-1])
    return None


def ends_a_span(name: str) -> bool:
    """The end of a hairpin, trill, 8va or pedal (`<)`, `trill)`, `ped-up` …): written after the span's last note,
    it waits for no note of its own, so it may close a bar (abc2midi and abcm2ps accept that)."""
    return name.endswith(")") or name == "ped-up"


SHORT_DECORATIONS = {".": "staccato", "~": "roll", "H": "fermata", "L": "accent", "M": "lowermordent",
                     "O": "coda", "P": "uppermordent", "S": "segno", "T": "trill", "u": "upbow", "v": "downbow",
                     "J": "slide", "R": "roll"}


def decoration_name(token: Token) -> str:
    """`!fermata!` → `fermata`, `+trill+` → `trill`, `.` → `staccato`."""
    if token.kind == "short_decoration":
        return SHORT_DECORATIONS[token.text]
    return token.text[1:-1]


# -- following one voice -------------------------------------------------------------------------------------


@dataclass
class Event:
    """A sounding note (or a rest when `pitch` is None) at `onset` (whole notes from the bar start)."""

    onset: Fraction
    duration: Fraction
    pitch: int | None
    tied: bool = False


@dataclass
class VoiceReader:
    """Follows one voice through its bars: `begin_bar()`, then `read(token)` for each token of the bar's music.

    `read` returns None when the token fits, else a (rule, message) pair naming what is wrong; the reader still
    advances, so a checker can report every problem. Durations are in whole notes.
    """

    unit: Fraction = Fraction(1, 8)
    meter: Fraction | None = Fraction(1)
    key: dict[str, int] = field(default_factory=dict)
    key_fifths: int | None = None
    """The signature in force (sharps > 0, flats < 0), to tell a key change from a restatement."""
    low: int = 21
    high: int = 108
    shift: int = 0
    """Semitones from written to sounding pitch (`treble-8` clef: -12); ranges are checked on sounding pitch."""
    tie: tuple[int, ...] | None = None
    """MIDI pitches a tie from the last note still has to reach."""
    tie_notes: tuple[NoteText, ...] = ()
    """The tied notes as written: a note of the same letter and octave without an accidental at the start of the
    next bar continues the tie with the tied pitch (xml2abc writes `^c-|c`)."""
    tie_text: str | None = None
    """How the tied note was written (`^F`, `[CE]`): the constrained decoder writes it again exactly."""
    slurs: int = 0
    # -- the bar being read
    elapsed: Fraction = Fraction(0)
    accidentals: dict[tuple[str, int], int] = field(default_factory=dict)
    tuplet_left: int = 0
    tuplet_ratio: Fraction = Fraction(1)
    tuplet_length: Fraction | None = None
    broken: Fraction | None = None
    last: str = "start"
    """Kind of the last token that matters for what may follow: start, note, chord, rest, tie, broken, …"""
    last_duration: Fraction = Fraction(0)
    last_written: Fraction = Fraction(0)
    broken_length: Fraction = Fraction(0)
    """Written length of the note before a broken rhythm sign: the note after it must have the same."""
    last_pitches: tuple[int, ...] = ()
    last_text: str = ""
    last_notes: tuple[NoteText, ...] = ()
    last_events: int = 0
    """How many events the last note or chord added (broken rhythm lengthens or shortens them)."""
    waiting: int = 0
    """Decorations, annotations, slur openings, grace groups and tuplet marks that still wait for their note."""
    grace: bool = False
    grace_length: Fraction = Fraction(0)
    """Written length of the grace notes waiting for their note, in units of L:."""
    trill: bool = False
    """A trill or roll waits for its note (abc2midi cannot play one on a chord)."""
    spaced: bool = False
    """The last token was a space (a tie must follow its note directly)."""
    staccato: bool = False
    last_staccato: bool = False
    """A staccato waits for its note / the last note has one (abc2midi cannot tie it)."""
    breath: bool = False
    last_breath: bool = False
    """A breath mark waits for its note / the last note has one (abc2midi cannot apply a broken rhythm to it)."""
    last_broken: bool = False
    """The last note ends a broken rhythm (abc2midi cannot start another one from it)."""
    last_trill: bool = False
    """The last note has a trill or roll (abc2midi counts a tied trilled note's length twice)."""
    spans: frozenset[str] = frozenset()
    """Hairpins, pedals, trills and 8va lines opened and not closed yet (`span_of`), across barlines."""
    events: list[Event] | None = None

    def copy(self) -> VoiceReader:
        clone = VoiceReader.__new__(VoiceReader)
        clone.__dict__.update(self.__dict__)
        clone.accidentals = dict(self.accidentals)
        return clone

    def begin_bar(self) -> None:
        self.elapsed = Fraction(0)
        self.accidentals = {}
        self.tuplet_left = 0
        self.tuplet_ratio = Fraction(1)
        self.tuplet_length = None
        self.broken = None
        self.last = "start"
        self.waiting = 0
        self.grace = False
        self.trill = False
        self.staccato = False
        self.breath = False

    # -- reading tokens ----------------------------------------------------------------------------------------
    def read(self, token: Token) -> tuple[str, str] | None:
        problem = self._read(token)
        if token.kind not in ("space", "beam_break", "spacer", "continuation"):
            self.spaced = False
        return problem

    def _read(self, token: Token) -> tuple[str, str] | None:
        kind = token.kind
        if self.last == "short_decoration" and kind not in ("note", "rest", "chord", "short_decoration"):
            # abc2midi reads `T (c`, `H "^a"c` or `T!p!c` as a malformed note
            self.last = "decoration"
            problem = self._read(token)
            return problem or ("token", f"a one-letter decoration must stand right before its note, not "
                                        f"before {token.text!r}")
        if kind == "note":
            note = note_parts(token.text)
            return self._sounding(token, (note,), length_value(note.length), note.pitch_text)
        if kind == "chord":
            members = chord_members(token.text)
            if not members:
                return "chord", f"empty chord {token.text!r}"
            if self.trill:
                self.trill = False
                return "chord", f"a trill or roll on the chord {token.text!r} (abc2midi cannot play it)"
            inner = length_value(members[0][0].length)
            lengths = {length_value(m.length) for m, _ in members}
            problem = None if len(lengths) == 1 else ("chord", f"chord {token.text!r} mixes note lengths")
            if self.tuplet_left and length_value(chord_length(token.text)) != 1:
                problem = problem or ("tuplet", f"chord {token.text!r} in a tuplet with its length after the bracket "
                                                "(abc2midi compares the lengths of its notes)")
            result = self._sounding(token, tuple(m for m, _ in members), inner * length_value(chord_length(token.text)),
                                    "[" + "".join(m.pitch_text for m, _ in members) + "]",
                                    inner_ties=tuple(tied for _, tied in members))
            return problem or result
        if kind == "rest":
            if token.text[0] in "ZX":
                if self.meter is None:
                    return "meter", f"bar rest {token.text!r} without a meter"
                count = int(token.text[1:] or 1)
                return self._advance(token, self.meter * count, None, rest=True)
            return self._advance(token, length_value(token.text[1:]) * self.unit, None, rest=True)
        if kind == "tie":
            previous, self.last = self.last, "tie"
            if previous == "tie" or (previous in ("note", "chord") and self.tie is not None):
                return "tie", "doubled tie"
            if previous not in ("note", "chord"):
                return "tie", "tie after no note"
            if self.last_staccato or self.last_breath:
                return "tie", "a staccato or breath-marked note cannot be tied (abc2midi finds no note before the tie)"
            if self.last_trill:
                return "tie", "a trilled note cannot be tied (abc2midi counts its tied length twice)"
            if self.spaced:
                self.tie, self.tie_text, self.tie_notes = self.last_pitches, self.last_text, self.last_notes
                return "tie", "a tie must follow its note directly (abc2midi finds no note to tie)"
            self.tie, self.tie_text, self.tie_notes = self.last_pitches, self.last_text, self.last_notes
            return None
        if kind == "broken":
            return self._broken(token)
        if kind == "tuplet":
            p, q, r = tuplet_parts(token.text)
            if p < 2:
                return "tuplet", f"tuplet {token.text!r} of fewer than 2 notes"
            if self.tuplet_left:
                return "tuplet", f"tuplet {token.text!r} inside an unfinished tuplet"
            self.tuplet_left = r or p
            self.tuplet_ratio = Fraction(q or tuplet_time(p, self.meter), p)
            self.tuplet_length = None
            self.waiting += 1
            self.last = "tuplet"
            return None
        if kind == "slur_open":
            self.slurs += 1
            self.waiting += 1
            self.last = "slur_open"
            if self.slurs > 1:
                return "slur", "slur within slur (abc2midi does not nest them)"
            return None
        if kind == "slur_close":
            previous, self.last = self.last, "slur_close"  # a tie after `)` finds no note (abc2midi)
            if self.slurs == 0:
                return "slur", "slur closed that was never opened"
            if previous not in ("note", "chord", "rest", "tie"):
                return "slur", "slur closed before any note"
            self.slurs -= 1
            return None
        if kind == "grace":
            members = chord_members(token.text)
            for member, _ in members:
                pitch = midi_pitch(member, self.key, dict(self.accidentals)) + self.shift
                if not self.low <= pitch <= self.high:
                    return "range", f"grace note {member.pitch_text} ({pitch_name(pitch)}) outside {self._range()}"
            self.waiting += 1
            self.grace = True
            self.grace_length = sum((length_value(member.length) for member, _ in members), Fraction(0))
            self.last = "grace"
            return None
        if kind in ("decoration", "short_decoration"):
            name = decoration_name(token)
            if kind == "decoration" and name not in KNOWN_DECORATIONS:
                return "token", f"unknown decoration {token.text!r}"
            span = span_of(name)
            if ends_a_span(name):
                self.spans = self.spans - {span}
                return None  # it belongs to the note before: a slur may close after it, a barline follow
            if span is not None:
                self.spans = self.spans | {span}
            self.waiting += 1
            self.trill = self.trill or name in ("trill", "roll")
            self.staccato = self.staccato or name == "staccato"
            self.breath = self.breath or name == "breath"
            self.last = kind
            return None
        if kind == "annotation":
            self.waiting += 1
            self.last = "annotation"
            return None
        if kind == "field":
            return self._field(token)
        if kind in ("space", "beam_break", "spacer", "continuation"):
            self.spaced = True
            return None
        if kind == "overlay":
            return "token", "voice overlay (&) is not supported"
        if kind == "barline":
            return "structure", f"barline {token.text!r} inside a bar"
        return "token", f"unexpected {kind} {token.text!r}"

    def _field(self, token: Token) -> tuple[str, str] | None:
        name, value = field_parts(token.text)
        if name == "K":
            try:
                key = parse_key(value)
            except MusicError as error:
                return "key", str(error)
            if key.sets_key:
                if abs(key.fifths) > MAX_FIFTHS:
                    return "key", f"key {value!r} has {abs(key.fifths)} {'sharps' if key.fifths > 0 else 'flats'}"
                self.key = key.accidentals()
                self.key_fifths = key.fifths
            return None
        if name == "M":
            self.meter = meter_length(value)
            return None
        if name == "L":
            self.unit = unit_length(value, self.unit)
            return None
        if name in "QIPNrV":
            return None
        return "token", f"inline field {token.text!r} is not supported"

    def _sounding(self, token: Token, notes: tuple[NoteText, ...], length: Fraction, text: str,
                  inner_ties: tuple[bool, ...] = ()) -> tuple[str, str] | None:
        pitches = tuple(midi_pitch(note, self.key, self.accidentals) + self.shift for note in notes)
        if self.tie is not None and self.elapsed == 0:
            # The first notes of a bar continue a tie from the last bar with its pitch unless they say otherwise.
            carried = {(n.letter, n.octave): p for n, p in zip(self.tie_notes, self.tie)}
            pitches = tuple(carried.get((n.letter, n.octave), p) if not n.accidental else p
                            for n, p in zip(notes, pitches))
        problem: tuple[str, str] | None = None
        for note, pitch in zip(notes, pitches):
            if not self.low <= pitch <= self.high:
                problem = "range", f"{note.pitch_text} ({pitch_name(pitch)}) outside {self._range()}"
                break
        if self.tie is not None and not set(self.tie) <= set(pitches):
            problem = problem or ("tie", f"tie joins different pitches ({self.tie_text} to {text})")
        self.tie, self.tie_text = None, None
        advance = self._advance(token, length * self.unit, pitches)
        self.last_pitches, self.last_text, self.last_notes = pitches, text, notes
        if any(inner_ties):
            self.tie = tuple(p for p, tied in zip(pitches, inner_ties) if tied)
            self.tie_notes = tuple(n for n, tied in zip(notes, inner_ties) if tied)
            self.tie_text = text
        return problem or advance

    def _advance(self, token: Token, duration: Fraction, pitches: tuple[int, ...] | None,
                 rest: bool = False) -> tuple[str, str] | None:
        problem: tuple[str, str] | None = None
        if rest and self.tie is not None:
            problem = "tie", f"tie to a rest ({self.tie_text} to {token.text})"
            self.tie, self.tie_text = None, None
        if self.grace and (rest or pitches is None):
            problem = problem or ("grace", "grace notes before a rest")
        if self.trill and (rest or pitches is None):
            # abc2midi does not spend a `!trill!` on a rest: it stays set, and every later chord is an error
            problem = problem or ("token", f"a trill or roll on the rest {token.text!r}")
        written = duration
        if self.tuplet_left:
            if self.tuplet_length is None:
                self.tuplet_length = duration
            elif written != self.tuplet_length:
                problem = problem or ("tuplet", f"tuplet notes of different lengths ({token.text!r}; abc2midi "
                                                "warns)")
            duration *= self.tuplet_ratio
            self.tuplet_left -= 1
        elif not is_notatable(duration) and token.text[0] not in "ZX":
            problem = problem or ("duration", f"{token.text!r} lasts {written} of a whole note, which no single "
                                              "note can show")
        if (duration * MUSICXML_TICKS).denominator != 1:
            problem = problem or ("duration", f"{token.text!r} lasts {duration} of a whole note, which MusicXML "
                                              "cannot hold exactly (abc2xml writes 2520 divisions per quarter)")
        if self.broken is not None:
            if rest:
                problem = problem or ("rhythm", "broken rhythm to a rest (abc2midi cannot apply it)")
            if self.staccato or self.breath:
                problem = problem or ("rhythm", "broken rhythm to a staccato or breath-marked note (abc2midi cannot "
                                                "apply it)")
            if written != self.broken_length:
                problem = problem or ("rhythm", f"broken rhythm between notes of different lengths ({token.text!r}; "
                                                "abc2midi cannot apply it)")
            duration *= self.broken
            self.broken = None
            ends_broken = True
        else:
            ends_broken = False
        if self.grace and pitches is not None and duration / self.unit <= self.grace_length / GRACE_SHARE:
            problem = problem or ("grace", f"grace notes longer than their note {token.text!r} (abc2midi plays "
                                           f"them in a quarter of their written length, cut short)")
        if self.events is not None:
            for pitch in pitches or (None,):
                self.events.append(Event(self.elapsed, duration, pitch))
            self.last_events = len(pitches or (None,))
        self.elapsed += duration
        self.last_duration = duration
        self.last_written = written
        self.last = "rest" if rest else ("chord" if token.kind == "chord" else "note")
        self.waiting = 0
        self.grace = False
        self.last_broken = ends_broken
        self.last_trill, self.trill = self.trill, False
        self.last_staccato, self.staccato = self.staccato, False
        self.last_breath, self.breath = self.breath, False
        return problem

    def _broken(self, token: Token) -> tuple[str, str] | None:
        if self.last not in ("note", "chord"):
            self.last = "broken"
            return "rhythm", f"broken rhythm {token.text!r} after no note"
        if self.last_staccato or self.last_breath:
            self.last = "broken"
            return "rhythm", f"broken rhythm {token.text!r} after a staccato or breath-marked note (abc2midi cannot " \
                             "apply it)"
        if self.tuplet_left:
            self.last = "broken"
            return "rhythm", f"broken rhythm {token.text!r} inside a tuplet"
        if self.last_broken:
            self.last = "broken"
            return "rhythm", f"broken rhythm {token.text!r} from a note that ends one (abc2midi cannot apply it)"
        self.broken_length = self.last_written
        short = Fraction(1, 2 ** len(token.text))
        first, second = (2 - short, short) if token.text[0] == ">" else (short, 2 - short)
        for factor in (first, second):
            if not is_notatable(self.last_duration * factor):
                self.last = "broken"
                return "duration", f"broken rhythm {token.text!r} makes a note of {self.last_duration * factor} of " \
                                   "a whole note, which no single note can show"
        change = self.last_duration * (first - 1)
        self.elapsed += change
        if self.events:
            for event in self.events[-self.last_events:]:
                event.duration *= first
        self.broken = second
        self.last = "broken"
        return None

    # -- state queries -----------------------------------------------------------------------------------------
    def open_problem(self) -> str | None:
        """Why the bar cannot end here (an unfinished tuplet, broken rhythm or a decoration without its note)."""
        if self.tuplet_left:
            return f"tuplet unfinished ({self.tuplet_left} note(s) missing)"
        if self.broken is not None:
            return "broken rhythm without its second note"
        if self.grace:
            return "grace notes without their note"
        if self.last == "tuplet":
            return "tuplet mark without notes"
        return None

    def _range(self) -> str:
        return f"the part's range {pitch_name(self.low)}-{pitch_name(self.high)}"


_UNMEASURABLE = {"rhythm", "tuplet", "meter"}
_COMMENT = re.compile(r"(?<!\\)%.*$", re.MULTILINE)


@lru_cache(maxsize=8192)
def bar_duration(text: str, unit: Fraction = Fraction(1, 8), meter: str | None = None) -> Fraction | None:
    """Duration of one bar of ABC music in whole notes, or None when it cannot be measured (a token ABC does not
    have, broken rhythm or a tuplet without its notes, a bar rest without a meter). Overlays (`&`) count once: the
    longest layer."""
    try:
        tokens = tokenize(_COMMENT.sub("", text))
    except LexError:
        return None
    reader = VoiceReader(unit=unit, meter=meter_length(meter), low=0, high=127)
    layers: list[Fraction] = []
    for token in tokens:
        if token.kind == "overlay":
            layers.append(reader.elapsed)
            reader.begin_bar()
            continue
        problem = reader.read(token)
        if problem is not None and problem[0] in _UNMEASURABLE:
            return None
    if reader.broken is not None or reader.last == "tuplet":
        return None
    return max([*layers, reader.elapsed])


_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def pitch_name(midi: int) -> str:
    """Scientific pitch name: 60 → `C4`, 21 → `A0`."""
    return f"{_NAMES[midi % 12]}{midi // 12 - 1}"


__all__ = ["CLEFS", "Event", "KNOWN_DECORATIONS", "Key", "MAX_FIFTHS", "MODE_FIFTHS", "MusicError", "NO_KEY",
           "VoiceReader", "bar_duration", "decoration_name", "default_unit", "diatonic_step", "ends_a_span",
           "is_notatable", "key_values", "span_of",
           "meter_length", "midi_pitch", "parse_key", "pitch_name", "respell", "tuplet_time", "unit_length"]
