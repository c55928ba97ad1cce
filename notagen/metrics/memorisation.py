"""Memorisation check: the longest run of consecutive bars a generated piece copies from ONE training piece.

Every bar is reduced to a transposition-invariant signature: its events (notes, chords, rests, ties, tuplet and
broken-rhythm marks) with each pitch given in semitones relative to the bar's first pitch and every length in
whole-note units (so `L:` does not matter). Pitches are spelled out with the key signature and the bar's
accidentals, so a piece copied into another key gives the same signatures. Signatures are hashed per voice-bar and
per whole bar (all voices, relative to one reference pitch) into dicts of postings; a query walks the generated
bars once, extending every (training sequence, bar) alignment that still matches and starting new ones from the
postings of informative bars (≥ `min_notes` notes, not among the most common bars). A piece is flagged when a run
reaches `threshold` bars and carries at least `min_run_notes` notes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

# --- ABC pitch spelling -------------------------------------------------------------------------------------------

_STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_SHARP_ORDER = "FCGDAEB"
_MAJOR_FIFTHS = {"C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5, "F#": 6, "C#": 7, "F": -1, "Bb": -2, "Eb": -3,
                 "Ab": -4, "Db": -5, "Gb": -6, "Cb": -7, "G#": 8, "D#": 9, "A#": 10, "E#": 11, "Fb": -8}
_MODE_SHIFT = {"maj": 0, "ion": 0, "min": -3, "m": -3, "aeo": -3, "dor": -2, "phr": -4, "lyd": 1, "mix": -1,
               "loc": -5}
_ACCIDENTAL = {"^^": 2, "^": 1, "=": 0, "_": -1, "__": -2}
_KEY = re.compile(r"^\s*([A-G])([#b]?)\s*([A-Za-z]*)(.*)$")
_EXPLICIT = re.compile(r"(\^\^|\^|__|_|=)([A-Ga-g])")


def key_signature(value: str) -> dict[str, int]:
    """Letter → alteration for a K: value ('G', 'Ador', 'Bbmin', 'D exp ^f _b', 'none')."""
    value = value.split("%")[0].strip()
    signature = dict.fromkeys(_STEPS, 0)
    match = _KEY.match(value)
    if not match:
        rest = value
    else:
        tonic, mode, rest = match.group(1) + match.group(2), match.group(3).lower(), match.group(4)
        mode_key = next((m for m in sorted(_MODE_SHIFT, key=len, reverse=True) if mode.startswith(m)), "maj")
        if mode and not any(mode.startswith(m) for m in _MODE_SHIFT):
            rest = mode + rest  # e.g. 'clef=bass' glued to the tonic
        fifths = _MAJOR_FIFTHS.get(tonic, 0) + _MODE_SHIFT[mode_key]
        letters = _SHARP_ORDER[:fifths] if fifths > 0 else _SHARP_ORDER[::-1][:-fifths]
        for letter in letters:
            signature[letter] = 1 if fifths > 0 else -1
    for accidental, letter in _EXPLICIT.findall(rest.split("clef")[0]):
        signature[letter.upper()] = _ACCIDENTAL[accidental]
    return signature


def parse_length(text: str) -> float:
    """ABC length suffix → multiple of L ('' 1, '2' 2, '/' ½, '//' ¼, '3/2' 1.5, '/4' ¼)."""
    if not text:
        return 1.0
    if "/" not in text:
        return float(text)
    numerator, _, rest = text.partition("/")
    num = float(numerator) if numerator else 1.0
    if rest.strip("/").isdigit():
        den = float(rest.strip("/")) * 2 ** rest.count("/")
    else:
        den = 2.0 ** (rest.count("/") + 1)
    return num / den if den else num  # "c/0" is malformed: keep the numerator


def _fraction(text: str, default: float) -> float:
    match = re.match(r"\s*(\d+)\s*/\s*(\d+)", text)
    return int(match.group(1)) / int(match.group(2)) if match and int(match.group(2)) else default


_TOKEN = re.compile(
    r'"[^"]*"'                                  # annotation / chord symbol
    r"|![^!\n]*!|\+[^+\n]*\+"                   # decorations
    r"|\{[^}]*\}"                               # grace notes
    r"|\[(?P<field>[A-Za-z]):(?P<fvalue>[^\]]*)\]"  # inline field
    r"|\[(?P<chord>[^\]|]*)\](?P<clen>\d*/*\d*)"   # chord
    r"|(?P<acc>\^\^|\^|__|_|=)?(?P<note>[A-Ga-g])(?P<oct>[',]*)(?P<len>\d*/*\d*)"
    r"|(?P<rest>[zxZX])(?P<rlen>\d*/*\d*)"
    r"|\((?P<tuplet>\d)"
    r"|(?P<broken>[<>]+)"
    r"|(?P<tie>-)"
)
_CHORD_NOTE = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])([',]*)(\d*/*\d*)")
_VOICE_MARK = re.compile(r"\[V:\s*([^\]\s]+)[^\]]*\]")
_BARLINE = re.compile(r":*\|[\]|:]?:*|:*\[\||::")
_FIELD_LINE = re.compile(r"^([A-Za-z]):(.*)$")


@dataclass
class _VoiceState:
    key: dict[str, int]
    unit: float  # L: in whole notes


_NATURAL: dict[tuple[str, str], tuple[tuple[str, int], str, int]] = {}


def _pitch(acc: str | None, letter: str, octave: str, key: dict[str, int], bar_acc: dict[tuple[str, int], int]) -> int:
    natural = _NATURAL.get((letter, octave))
    if natural is None:  # (letter, octave marks) → (accidental slot, letter, natural midi), computed once
        upper = letter.upper()
        base = 60 + (12 if letter.islower() else 0) + 12 * octave.count("'") - 12 * octave.count(",")
        natural = _NATURAL.setdefault((letter, octave), ((upper, base), upper, base + _STEPS[upper]))
    slot, upper, midi = natural
    if acc:
        bar_acc[slot] = _ACCIDENTAL[acc]
    return midi + bar_acc.get(slot, key[upper])


_LENGTHS: dict[str, float] = {}


def _length(text: str) -> float:
    value = _LENGTHS.get(text)
    if value is None:
        value = _LENGTHS.setdefault(text, parse_length(text)) if len(_LENGTHS) < 4096 else parse_length(text)
    return value


def bar_events(text: str, state: _VoiceState) -> list[tuple]:
    """Events of one bar: ('n', midi, dur) notes, ('c', (midi…), dur) chords, ('z', dur) rests and marks."""
    events: list[tuple] = []
    bar_acc: dict[tuple[str, int], int] = {}
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup  # the last group of the matched alternative names it; None for skipped tokens
        if kind == "len":
            acc, letter, octave, length = m.group("acc", "note", "oct", "len")
            events.append(("n", _pitch(acc, letter, octave, state.key, bar_acc),
                           round(_length(length) * state.unit, 6)))
        elif kind is None:
            continue
        elif kind == "rlen":
            events.append(("z", round(_length(m.group("rlen")) * state.unit, 6)))
        elif kind == "clen":
            notes = _CHORD_NOTE.findall(m.group("chord"))
            if notes:
                pitches = tuple(sorted({_pitch(a, n, o, state.key, bar_acc) for a, n, o, _ in notes}))
                dur = _length(notes[0][3]) * _length(m.group("clen")) * state.unit
                events.append(("c", pitches, round(dur, 6)))
        elif kind == "fvalue":
            name, value = m.group("field", "fvalue")
            if name == "K":
                state.key = key_signature(value)
            elif name == "L":
                state.unit = _fraction(value, state.unit)
        elif kind == "tuplet":
            events.append(("(", int(m.group("tuplet"))))
        else:  # broken rhythm or tie
            events.append((m.group(kind)[0],))
    return events


def _first_pitch(events: Sequence[tuple]) -> int | None:
    for event in events:
        if event[0] == "n":
            return event[1]
        if event[0] == "c":
            return event[1][0]
    return None


def relative(events: Sequence[tuple], reference: int | None) -> tuple:
    """Events with pitches relative to `reference` (transposition-invariant)."""
    out = []
    for event in events:
        if event[0] == "n":
            out.append(("n", event[1] - reference, event[2]))
        elif event[0] == "c":
            out.append(("c", tuple(p - reference for p in event[1]), event[2]))
        else:
            out.append(event)
    return tuple(out)


def note_count(events: Sequence[tuple]) -> int:
    return sum(1 for e in events if e[0] in ("n", "c"))


@dataclass
class PieceBars:
    """Per voice, the bar event lists of a piece (voices in order of appearance)."""

    voices: dict[str, list[list[tuple]]]

    @property
    def n_bars(self) -> int:
        return max((len(b) for b in self.voices.values()), default=0)

    def whole_bars(self) -> list[tuple[int, int]]:
        """(signature hash, notes) of every whole bar: all voices, relative to the bar's first pitch."""
        out = []
        names = list(self.voices)
        for i in range(self.n_bars):
            bars = [self.voices[v][i] if i < len(self.voices[v]) else [] for v in names]
            reference = next((p for b in bars if (p := _first_pitch(b)) is not None), None)
            signature = tuple(relative(b, reference) for b in bars)
            out.append((hash(signature), sum(note_count(b) for b in bars)))
        return out

    def voice_bars(self, voice: str) -> list[tuple[int, int]]:
        return [(hash(relative(b, _first_pitch(b))), note_count(b)) for b in self.voices[voice]]


def parse_bars(text: str) -> PieceBars:
    """Split an ABC piece (standard or interleaved; prompt lines, `[r:]` marks allowed) into voice bars."""
    default_key = dict.fromkeys(_STEPS, 0)
    unit = 1 / 8
    length_seen = False
    states: dict[str, _VoiceState] = {}
    voices: dict[str, list[list[tuple]]] = {}
    current = "1"
    in_body = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("%")):
            continue
        field_match = _FIELD_LINE.match(line)
        if field_match and not line.startswith("[") and "|" not in line[:3]:
            name, value = field_match.group(1), field_match.group(2).strip()
            if name == "K":
                if current in states and in_body:
                    states[current].key = key_signature(value)
                else:
                    default_key = key_signature(value)
                    for state in states.values():
                        state.key = dict(default_key)
                in_body = True
            elif name == "L":
                length_seen = True
                unit = _fraction(value, unit)
                for state in states.values():
                    state.unit = unit
            elif name == "M" and not length_seen and not in_body:
                meter = _fraction(value, 1.0)  # ABC's default unit length depends on the meter
                unit = 1 / 16 if meter < 0.75 else 1 / 8
            elif name == "V":
                current = value.split()[0] if value.split() else "1"
                if current not in states:
                    states[current] = _VoiceState(dict(default_key), unit)
                    voices[current] = []
            continue
        in_body = True
        line = re.sub(r"\[r:[^\]]*\]", "", line)
        marks = list(_VOICE_MARK.finditer(line))
        segments: list[tuple[str, str]] = []
        if marks:
            for index, mark in enumerate(marks):
                end = marks[index + 1].start() if index + 1 < len(marks) else len(line)
                segments.append((mark.group(1), line[mark.end():end]))
        else:
            segments.append((current, line))
        present = set()
        for voice, segment in segments:
            if voice not in states:
                states[voice] = _VoiceState(dict(default_key), unit)
                voices[voice] = []
            present.add(voice)
            parts = _BARLINE.split(segment.rstrip("\\"))
            # A line's text after its last barline continues into the next line's bar in standard ABC; here the
            # interleaved format always closes bars, so trailing text is a bar of its own.
            for part in parts:
                if not part.strip():
                    continue
                voices[voice].append(bar_events(part, states[voice]))
        if marks:  # interleaved: a voice missing from this line rests for the bar
            filled = max((len(voices[v]) for v in present), default=0)
            for voice, bars in voices.items():
                if voice not in present and bars:
                    while len(bars) < filled:
                        bars.append([])
    return PieceBars(voices)


# --- index and queries --------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A run of consecutive bars copied from one training piece."""

    bars: int = 0
    notes: int = 0
    piece: str | None = None
    train_start: int = -1  # bar index in the training piece (or voice)
    generated_start: int = -1
    voice: str | None = None  # generated voice (voice-level runs)
    train_voice: str | None = None


@dataclass
class MemorisationResult:
    whole: Run
    voice: Run
    flagged: bool
    threshold: int
    n_bars: int
    seconds: float
    flagged_whole: bool = False  # flagged by a run of whole bars (every voice copied), not by one voice alone

    @property
    def longest(self) -> Run:
        return self.whole if self.whole.bars >= self.voice.bars else self.voice

    def to_dict(self) -> dict:
        data = asdict(self)
        data["longest_bars"] = self.longest.bars
        data["piece"] = self.longest.piece
        return data


@dataclass
class _Table:
    sequences: list[list[int]] = field(default_factory=list)  # hashes per training sequence
    notes: list[list[int]] = field(default_factory=list)
    owners: list[tuple[int, str | None]] = field(default_factory=list)  # (piece index, voice)
    postings: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, bars: list[tuple[int, int]], owner: tuple[int, str | None], min_notes: int) -> None:
        seq = len(self.sequences)
        self.sequences.append([h for h, _ in bars])
        self.notes.append([n for _, n in bars])
        self.owners.append(owner)
        for position, (h, notes) in enumerate(bars):
            if notes >= min_notes:
                self.postings.setdefault(h, []).append((seq, position))


class MemorisationIndex:
    """Postings of every training bar (whole bars and voice bars), queried for copied runs."""

    def __init__(self, min_notes: int = 2, max_postings: int = 200) -> None:
        self.min_notes = min_notes
        self.max_postings = max_postings
        self.piece_ids: list[str] = []
        self.whole = _Table()
        self.voice = _Table()
        self.failed: list[tuple[str, str]] = []

    def add(self, piece_id: str, text: str) -> None:
        try:
            bars = parse_bars(text)
        except (ValueError, KeyError, IndexError) as error:  # a malformed piece is recorded, not fatal
            self.failed.append((piece_id, f"{type(error).__name__}: {error}"))
            return
        index = len(self.piece_ids)
        self.piece_ids.append(piece_id)
        self.whole.add(bars.whole_bars(), (index, None), self.min_notes)
        for voice in bars.voices:
            self.voice.add(bars.voice_bars(voice), (index, voice), self.min_notes)

    @classmethod
    def build(cls, pieces: Iterable[tuple[str, str]], **options) -> MemorisationIndex:
        index = cls(**options)
        for piece_id, text in pieces:
            index.add(piece_id, text)
        return index

    def __len__(self) -> int:
        return len(self.piece_ids)

    def _longest(self, table: _Table, bars: list[tuple[int, int]]) -> Run:
        best = Run()
        active: dict[tuple[int, int], tuple[int, int, int]] = {}  # (seq, pos) → (bars, notes, generated start)
        sequences = table.sequences
        for j, (h, notes) in enumerate(bars):
            extended: dict[tuple[int, int], tuple[int, int, int]] = {}
            for (seq, pos), (length, run_notes, start) in active.items():
                nxt = pos + 1
                if nxt < len(sequences[seq]) and sequences[seq][nxt] == h:
                    extended[(seq, nxt)] = (length + 1, run_notes + notes, start)
            if notes >= self.min_notes:
                postings = table.postings.get(h)
                if postings and len(postings) <= self.max_postings:
                    for key in postings:
                        if key not in extended:
                            extended[key] = (1, notes, j)
            for (seq, pos), (length, run_notes, start) in extended.items():
                if (length, run_notes) > (best.bars, best.notes):
                    piece_index, voice = table.owners[seq]
                    best = Run(length, run_notes, self.piece_ids[piece_index], pos - length + 1, start, None, voice)
            active = extended
        return best

    def check(self, text: str, threshold: int = 4, min_run_notes: int | None = None) -> MemorisationResult:
        """Longest copied runs of a generated piece (whole bars and single voices) and whether it is flagged."""
        started = time.perf_counter()
        min_run_notes = 2 * threshold if min_run_notes is None else min_run_notes
        bars = parse_bars(text)
        whole = self._longest(self.whole, bars.whole_bars())
        voice = Run()
        for name in bars.voices:
            run = self._longest(self.voice, bars.voice_bars(name))
            if (run.bars, run.notes) > (voice.bars, voice.notes):
                run.voice = name
                voice = run
        whole_flag = whole.bars >= threshold and whole.notes >= min_run_notes
        flagged = whole_flag or (voice.bars >= threshold and voice.notes >= min_run_notes)
        return MemorisationResult(whole, voice, flagged, threshold, bars.n_bars, time.perf_counter() - started,
                                  whole_flag)


def flagged_share(results: Sequence[MemorisationResult], whole_only: bool = False) -> float:
    """Share of flagged pieces; `whole_only` counts only runs of whole bars (one voice's run, e.g. a chorale
    melody that many training pieces share, is then not enough)."""
    if not results:
        return 0.0
    return sum(r.flagged_whole if whole_only else r.flagged for r in results) / len(results)
