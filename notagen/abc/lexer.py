"""The one ABC music lexer: tokens of the music text of a voice (notes, rests, chords, ties, slurs, tuplets, grace
groups, decorations, annotations, inline fields, barlines, broken rhythm …), fed one character at a time.

The token grammar is a table of regular expressions (`TOKEN_PATTERNS`, ABC 2.1 music syntax in the canonical form
xml2abc writes: octave marks `,` only after upper-case letters and `'` only after lower-case ones, lengths `3/2`,
`/`, `//`, `3/`). Tokens are cut by maximal munch: a character extends the current token while the text stays a
prefix of some token (the `regex` package's partial matching tells), otherwise the current token must be complete
and the character starts the next one. So the same lexer serves

* whole texts (`tokenize`: the strict checker, the memorisation index), and
* generation, one character at a time (`Lexer`: the constrained decoder asks whether a character may extend the
  current token or must start a new one, before it is sampled).

Anything that is not a token (a stray `,`, an unclosed `"`, a `[` that starts nothing) is a `LexError` naming the
character and its position.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import regex

ACCIDENTAL = r"(?:\^\^|\^|__|_|=)"
PITCH = rf"{ACCIDENTAL}?(?:[A-G],*|[a-g]'*)"
LENGTH = r"(?:\d+)?(?:/\d+|/+)?"
VOLTA = r"\d+(?:[,\-]\d+)*"

# Order matters only between alternatives that match the same complete text (the first wins).
TOKEN_PATTERNS: tuple[tuple[str, str], ...] = (
    ("note", rf"{PITCH}{LENGTH}"),
    ("rest", rf"[zx]{LENGTH}|[ZX]\d*"),
    ("chord", rf"\[(?:{PITCH}{LENGTH}-?)+\]{LENGTH}"),
    ("field", r"\[[A-Za-z]:[^\]\n]*\]"),
    ("barline", rf"(?::*(?:\|\|?|\[\|)\]?:*|::+)(?:{VOLTA})?|\[{VOLTA}"),
    ("tie", r"-"),
    ("tuplet", r"\(\d+(?::\d*(?::\d*)?)?"),
    ("slur_open", r"\("),
    ("slur_close", r"\)"),
    ("grace", rf"\{{/?(?:{PITCH}{LENGTH}| )+\}}"),
    ("decoration", r"![^!\n]{1,40}!|\+[^+\n]{1,40}\+"),
    ("short_decoration", r"[.~HLMOPSTuvJR]"),
    ("annotation", r'"[^"\n]*"'),
    ("broken", r"<{1,3}|>{1,3}"),
    ("space", r"[ \t]+"),
    ("overlay", r"&"),
    ("spacer", r"y[\d/]*"),
    ("beam_break", r"`"),
    ("continuation", r"\\"),
)
KINDS = tuple(kind for kind, _ in TOKEN_PATTERNS)
_GRAMMAR = regex.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in TOKEN_PATTERNS))
_NOTE_PARTS = regex.compile(rf"({ACCIDENTAL}?)([A-Ga-g])([,']*)({LENGTH})")
_FIELD_PARTS = regex.compile(r"\[([A-Za-z]):([^\]]*)\]")
_TUPLET_PARTS = regex.compile(r"\((\d+)(?::(\d*)(?::(\d*))?)?")


class LexError(ValueError):
    """A character that starts no token, or a token left unfinished; `position` is the character's offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind (one of KINDS), its text and where it starts in the lexed text."""

    kind: str
    text: str
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True, slots=True)
class NoteText:
    """The parts of a written pitch with its length: `^c'3/2` → ('^', 'c', "'", '3/2')."""

    accidental: str
    letter: str
    octave: str
    length: str

    @property
    def pitch_text(self) -> str:
        """The pitch as written, without the length (what a tie must repeat)."""
        return f"{self.accidental}{self.letter}{self.octave}"


@lru_cache(maxsize=65536)
def is_prefix(text: str) -> bool:
    """True when `text` is a token or can still become one by appending characters."""
    return _GRAMMAR.fullmatch(text, partial=True) is not None


@lru_cache(maxsize=65536)
def complete_kind(text: str) -> str | None:
    """The kind of token `text` is when it is complete, else None."""
    match = _GRAMMAR.fullmatch(text)
    return match.lastgroup if match else None


@lru_cache(maxsize=16384)
def note_parts(text: str) -> NoteText:
    """Split a note token (or a chord/grace member) into accidental, letter, octave marks and length."""
    match = _NOTE_PARTS.fullmatch(text)
    if match is None:
        raise ValueError(f"not a note: {text!r}")
    return NoteText(*match.groups())


@lru_cache(maxsize=4096)
def chord_members(text: str) -> tuple[tuple[NoteText, bool], ...]:
    """The notes of a chord token (or a grace group), each with whether it carries its own tie."""
    members = []
    for match in _NOTE_PARTS.finditer(text):
        tied = text[match.end():match.end() + 1] == "-"
        members.append((NoteText(*match.groups()), tied))
    return tuple(members)


@lru_cache(maxsize=4096)
def chord_length(text: str) -> str:
    """The length written after a chord's closing bracket (`[CE]3/2` → `3/2`)."""
    return text[text.rindex("]") + 1:]


def field_parts(text: str) -> tuple[str, str]:
    """An inline field token `[K:G]` → ('K', 'G')."""
    match = _FIELD_PARTS.fullmatch(text)
    if match is None:
        raise ValueError(f"not an inline field: {text!r}")
    return match.group(1), match.group(2).strip()


def tuplet_parts(text: str) -> tuple[int, int | None, int | None]:
    """A tuplet token `(p:q:r` → (p, q or None, r or None)."""
    match = _TUPLET_PARTS.fullmatch(text)
    if match is None:
        raise ValueError(f"not a tuplet: {text!r}")
    p, q, r = match.groups()
    return int(p), int(q) if q else None, int(r) if r else None


@lru_cache(maxsize=4096)
def length_value(text: str) -> Fraction:
    """The multiplier a length suffix denotes: `` → 1, `2` → 2, `/` → 1/2, `//` → 1/4, `3/2` → 3/2, `3/` → 3/2."""
    if not text:
        return Fraction(1)
    numerator_text, slash, rest = text.partition("/")
    numerator = int(numerator_text) if numerator_text else 1
    if not slash:
        return Fraction(numerator)
    if rest.isdigit():
        denominator = int(rest)
    else:  # only slashes: `/` halves, each further slash halves again
        denominator = 2 ** (text.count("/"))
    if denominator == 0:
        raise ValueError(f"zero length denominator in {text!r}")
    return Fraction(numerator, denominator)


class Lexer:
    """Incremental maximal-munch lexer. `feed` one character at a time; completed tokens come back."""

    __slots__ = ("buffer", "start", "position")

    def __init__(self, offset: int = 0) -> None:
        self.buffer = ""
        self.start = offset
        self.position = offset

    def copy(self) -> Lexer:
        clone = Lexer.__new__(Lexer)
        clone.buffer, clone.start, clone.position = self.buffer, self.start, self.position
        return clone

    def extends(self, char: str) -> bool:
        """True when `char` continues the current token (rather than ending it)."""
        return bool(self.buffer) and is_prefix(self.buffer + char)

    def pending(self) -> Token | None:
        """The current token if it is complete as it stands, else None (also None when nothing is pending)."""
        kind = complete_kind(self.buffer) if self.buffer else None
        return Token(kind, self.buffer, self.start) if kind else None

    def feed(self, char: str) -> Token | None:
        """Take one character; returns the token it completed, if any. Raises LexError."""
        if self.buffer and is_prefix(self.buffer + char):
            self.buffer += char
            self.position += 1
            return None
        done = self._close()
        if not is_prefix(char):
            raise LexError(f"unexpected character {char!r}", self.position)
        self.buffer, self.start = char, self.position
        self.position += 1
        return done

    def finish(self) -> Token | None:
        """End of text: the last token (LexError if it is unfinished)."""
        done = self._close()
        self.buffer = ""
        return done

    def _close(self) -> Token | None:
        if not self.buffer:
            return None
        kind = complete_kind(self.buffer)
        if kind is None:
            raise LexError(f"unfinished {_describe(self.buffer)} {self.buffer!r}", self.start)
        return Token(kind, self.buffer, self.start)


def _describe(text: str) -> str:
    return {"[": "bracket", "!": "decoration", '"': "annotation", "{": "grace group", "+": "decoration",
            "(": "tuplet"}.get(text[0], "token")


def tokenize(text: str, offset: int = 0) -> list[Token]:
    """All tokens of a piece of music text (no newlines inside tokens; a newline ends the text of a line)."""
    lexer = Lexer(offset)
    tokens = []
    for char in text:
        token = lexer.feed(char)
        if token is not None:
            tokens.append(token)
    last = lexer.finish()
    if last is not None:
        tokens.append(last)
    return tokens


__all__ = ["KINDS", "LexError", "Lexer", "NoteText", "Token", "chord_length", "chord_members", "complete_kind",
           "field_parts", "is_prefix", "length_value", "note_parts", "tokenize", "tuplet_parts"]
