"""The 15 keys, key arithmetic, and transposition that moves every note event by exactly the interval."""

from pathlib import Path

import pytest
from abctoolkit.transpose import Key2index, Mode2Key

from notagen.abc.interleave import interleave, parse_standard
from notagen.abc.text import original_key
from notagen.abc.transpose import (
    KEYS,
    key_to_pitch_class,
    keys_for_pitch_class,
    mode_to_key_signature,
    transpose,
    transposition_interval,
)
from notagen.convert import abc_to_musicxml, score_to_abc
from notagen.events import compare_events, musicxml_events, shift_pitches

FIXTURES = Path(__file__).parent / "fixtures"


def test_keys_are_the_reference_keys():
    assert KEYS == ("Cb", "C", "C#", "Db", "D", "Eb", "E", "F", "F#", "Gb", "G", "Ab", "A", "Bb", "B")
    assert KEYS == tuple(Key2index)
    assert {key: key_to_pitch_class(key) for key in KEYS} == Key2index


def test_mode_to_key_signature_agrees_with_the_reference_table():
    assert mode_to_key_signature("Am") == "C"
    assert mode_to_key_signature("Dmix") == "G"
    assert mode_to_key_signature("F#min") == "A"
    assert mode_to_key_signature("none") == "C"
    for mode, key in Mode2Key.items():
        assert mode_to_key_signature(mode) == key, mode


def test_pitch_class_helpers():
    assert key_to_pitch_class("C#") == key_to_pitch_class("Db") == 1
    assert key_to_pitch_class("Cb") == 11
    assert keys_for_pitch_class(6) == ("F#", "Gb")
    assert keys_for_pitch_class(2) == ("D",)
    assert transposition_interval("F#min", "Eb") == 6     # A → Eb: up a tritone (≤ 6 goes up)
    assert transposition_interval("F#min", "F#") == -3    # A → F#: 9 up is 3 down
    assert transposition_interval("G", "G") == 0
    with pytest.raises(ValueError):
        key_to_pitch_class("H")


@pytest.mark.parametrize("key", KEYS)
def test_transposition_moves_every_event_by_the_interval(chorale, key):
    before = musicxml_events(abc_to_musicxml(chorale))
    moved = transpose(chorale, key)
    after = musicxml_events(abc_to_musicxml(moved))
    interval = transposition_interval(original_key(chorale), key)
    assert -5 <= interval <= 6
    comparison = compare_events(shift_pitches(before, interval), after, durations=True)
    assert comparison.exact, comparison
    # Same signature pitch class (abctoolkit spells minor keys its own way: C# for F#min gives Bbmin, i.e. Db).
    assert key_to_pitch_class(mode_to_key_signature(original_key(moved))) == key_to_pitch_class(key)
    # The bar structure is untouched, so the transposed text interleaves into the same number of lines.
    assert len(interleave(moved).splitlines()) == len(interleave(chorale).splitlines())


def test_transposing_the_folk_tune_keeps_its_rhythm():
    standard = score_to_abc(FIXTURES / "abc_acacia_reel.abc")
    before = musicxml_events(abc_to_musicxml(standard))
    after = musicxml_events(abc_to_musicxml(transpose(standard, "Bb")))
    assert compare_events(shift_pitches(before, transposition_interval("G", "Bb")), after, durations=True).exact


def test_percussion_voice_is_untouched():
    text = ("L:1/8\nM:2/4\nK:G\nV:1 treble\nV:2 perc\nK:none\n"
            "V:1\nG2 B2 | d4 |]\nV:2\nF2 c2 | F4 |]\n")
    moved = parse_standard(transpose(text, "A"))
    assert moved.voices["1"].bars == ["A2 c2", "e4"]
    assert moved.voices["2"].bars == ["F2 c2", "F4"]


def test_unknown_key_is_rejected(chorale):
    with pytest.raises(ValueError, match="unknown key"):
        transpose(chorale, "H")
