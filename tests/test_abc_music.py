"""Keys, pitches, meters and the voice reader: what ABC music means."""

from fractions import Fraction

import pytest

from notagen.abc.lexer import note_parts, tokenize
from notagen.abc.music import (
    VoiceReader,
    bar_duration,
    is_notatable,
    key_values,
    meter_length,
    midi_pitch,
    parse_key,
    respell,
)


def test_keys_and_their_signatures():
    assert parse_key("D").accidentals() == {"F": 1, "C": 1}
    assert parse_key("Bb minor").fifths == -5 and parse_key("Gm").fifths == -2
    assert parse_key("E dor").fifths == 2 and parse_key("Dmix").fifths == 1
    assert parse_key("none").fifths == 0 and parse_key("treble").sets_key is False
    assert parse_key("G clef=bass").clef == "bass" and parse_key("G clef=bass").fifths == 1
    assert parse_key("Fb").fifths == -8
    assert respell(parse_key("Fb")).name == "E" and respell(parse_key("G#")).name == "Ab"
    assert "Fb" not in key_values() and "Cb" in key_values() and "F#m" in key_values()


def test_pitches_follow_key_and_bar_accidentals():
    key = parse_key("D").accidentals()
    bar: dict = {}
    assert midi_pitch(note_parts("F"), key, bar) == 66              # F sharp from the signature
    assert midi_pitch(note_parts("=F"), key, bar) == 65
    assert midi_pitch(note_parts("F"), key, bar) == 65              # the natural lasts the bar
    assert midi_pitch(note_parts("f"), key, bar) == 78              # another octave keeps the signature
    assert midi_pitch(note_parts("C,,"), {}, {}) == 36 and midi_pitch(note_parts("c'"), {}, {}) == 84


def test_meters_and_notatable_lengths():
    assert meter_length("C") == 1 and meter_length("6/8") == Fraction(3, 4) and meter_length("3+2/8") == Fraction(5, 8)
    assert meter_length("none") is None
    assert all(is_notatable(Fraction(n, d)) for n, d in [(1, 8), (3, 16), (1, 2), (3, 4), (1, 1), (3, 2)])
    assert not any(is_notatable(Fraction(n, d)) for n, d in [(5, 8), (7, 8), (5, 16), (1, 12)])


def test_reader_reports_ties_slurs_and_ranges():
    reader = VoiceReader(low=48, high=72)
    problems = [reader.read(token) for token in tokenize("G2- F2 (c2 d2")]
    assert ("tie", "tie joins different pitches (G to F)") in problems
    reader.begin_bar()
    problems = [reader.read(token) for token in tokenize("c2) G,,2 z2--")]
    rules = [problem[0] for problem in problems if problem]
    assert rules == ["range", "tie", "tie"] and reader.slurs == 0
    assert reader.elapsed == Fraction(3, 4)


@pytest.mark.parametrize("text, expected", [
    ("A2 B2 !fermata!c2 e2", Fraction(1)),
    ("cB", Fraction(1, 4)),                      # pickup of two eighths
    ("(3abc d", Fraction(3, 8)),                 # triplet of eighths = a quarter
    ("(3:2:4a/b/c/d/", Fraction(1, 6)),          # explicit p:q:r, 4 notes affected
    ("[CEG]2 z2", Fraction(1, 2)),
    ("[C2E2G2] z2", Fraction(1, 2)),             # length inside the chord
    ("a>b c<d", Fraction(1, 2)),
    ("z/ z// z3/2", Fraction(9, 32)),
    ('"^dolce" {/d} .c2 !p! d e f2', Fraction(3, 4)),
    ("Z", Fraction(1)),                          # bar rest in 4/4
    ("[L:1/16] c4 d4", Fraction(1, 2)),
    ("abc&def", Fraction(3, 8)),                 # overlay counts once
])
def test_bar_duration(text, expected):
    assert bar_duration(text, Fraction(1, 8), "4/4") == expected


def test_bar_duration_unmeasurable():
    assert bar_duration(">a") is None
    assert bar_duration("Z", meter="none") is None
    assert bar_duration("(0a") is None
