"""Validity report and `notagen check`."""

import json
from fractions import Fraction

import pytest

from notagen.abc.check import check_abc
from notagen.abc.interleave import interleave
from notagen.cli import main


def _generated(standard: str) -> str:
    """The chorale as the model writes it: prompt lines, rest-reduced interleaved body with [r:] marks."""
    reduced = interleave(standard, reduce_rests=True)
    header, body = reduced.split("[V:1]", 1)
    lines = ("[V:1]" + body).splitlines()
    return "%Baroque\n%Bach, Johann Sebastian\n%Choral\n" + header + "".join(
        f"[r:{i}/{len(lines) - 1 - i}]{line}\n" for i, line in enumerate(lines))


def test_valid_chorale(chorale):
    report = check_abc(chorale)
    assert report.valid and report.parses and report.error is None
    assert report.voices == 4 and report.bars == 10
    assert report.bars_per_voice == {"1": 10, "2": 10, "3": 10, "4": 10}
    assert report.bar_durations["1"][0] == Fraction(1)      # the pickup: two eighths = one quarter
    assert report.bar_durations["1"][1:] == [Fraction(4)] * 9
    assert (report.misaligned_bars, report.bae) == (0, 0.0)


def test_interleaved_and_generated_forms(chorale, quartet):
    assert check_abc(interleave(chorale)).valid
    report = check_abc(_generated(quartet))
    assert report.valid and report.interleaved and report.rest_reduced
    assert report.bars_per_voice == check_abc(quartet).bars_per_voice


def test_misaligned_piece(chorale):
    shifted = chorale.replace("| A2 B2 !fermata!c2 e2 |", "| A2 B2 !fermata!c2 e |", 1)   # soprano bar 2 short
    report = check_abc(shifted)
    assert report.parses and not report.valid
    assert report.misaligned == [1] and report.bae == pytest.approx(0.1)
    assert report.bar_durations["1"][1] == Fraction(7, 2)


def test_unequal_bar_counts(chorale):
    shortened = chorale.replace("^A,,4 B,,2 C,2 | ", "", 1)   # the bass loses its 9th bar
    report = check_abc(shortened)
    assert not report.valid
    assert report.bars_per_voice == {"1": 10, "2": 10, "3": 10, "4": 9}


def test_a_voice_missing_from_an_interleaved_line_rests(chorale):
    lines = interleave(chorale).splitlines()
    lines[-2] = lines[-2].split("[V:4]")[0]      # generated text may omit a resting voice
    report = check_abc("\n".join(lines) + "\n")
    assert report.valid and report.rest_reduced


def test_unparseable_text():
    report = check_abc("L:1/8\nM:2/4\nK:C\n[V:1]c2 d2|[V:2] |\n")
    assert not report.parses and not report.valid and "Syntax error" in report.error
    assert not check_abc("just some words").valid


def test_check_command(tmp_path, capsys, chorale):
    good, bad = tmp_path / "good.abc", tmp_path / "bad.abc"
    good.write_text(_generated(chorale))
    bad.write_text(chorale.replace("| A2 B2 !fermata!c2 e2 |", "| A2 B2 !fermata!c2 e |", 1))
    assert main(["check", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "bar 2, V:1: duration: bar lasts 7/2 quarter notes, the meter 4" in out
    assert main(["check", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["misaligned_bars"] == 1 and data["bar_durations"]["1"][1] == "7/2"
    assert main(["check", str(tmp_path / "missing.abc")]) == 1
    assert "no such file" in capsys.readouterr().err


# -- strict rules: a small valid piece, then one hand-made breakage per rule ---------------------------------

VALID = """X:1
L:1/8
M:4/4
K:G
V:1 treble nm="Soprano"
V:2 bass nm="Bass"
[V:1]B2|[V:2]G,2|
[V:1]c2 d2 (e2 d2)|[V:2]C,2 B,,2 C,2 D,2|
[V:1]d4- d2 B2|[V:2]G,,4 G,2 D,2|
[V:1](3BAG A2 !fermata!G2 z2|[V:2]D,2 D,2 !fermata!G,,2 z2|
[V:1]G6|][V:2]G,,6|]
"""


def test_the_valid_piece_is_valid():
    report = check_abc(VALID)
    assert report.valid, report.failures
    assert report.failure_counts == {}


@pytest.mark.parametrize("rule, old, new", [
    ("token", "G,2|\n[V:1]c2", "G,2 ,,|\n[V:1]c2"),                       # stray octave marks
    ("token", "!fermata!G2 z2|[V:2]", "!fermatta!G2 z2|[V:2]"),           # unknown decoration
    ("tie", "d4- d2 B2", "d4- c2 B2"),                                    # a tie to another pitch
    ("tie", "d4- d2 B2", "d4-- d2 B2"),                                   # a doubled tie
    ("tie", "d4- d2 B2", "Td4- d2 B2"),                                   # a trilled tie (abc2midi miscounts it)
    ("token", "!fermata!G2 z2|[V:2]", "!fermata!G2 !trill!z2|[V:2]"),     # a trill on a rest (abc2midi keeps it)
    ("rhythm", "d4- d2 B2", "d4- d>d>B B"),                                # broken rhythm from a note ending one
    ("rhythm", "d4- d2 B2", "d4- !breath!d>B B2"),                          # a breath mark in a broken rhythm
    ("tie", "d4- d2 B2", "!breath!d4- d2 B2"),                            # a breath-marked note tied (abc2midi)
    ("duration", "d4- d2 B2", "d4- d3>B"),                                # a broken rhythm making 9/16
    ("slur", "(e2 d2)", "(e2 d2"),                                        # never closed
    ("tuplet", "G2 z2|[V:2]D,2", "G2 z (3B|[V:2]D,2"),                    # a tuplet short of notes in its bar
    ("tuplet", "[V:1](3BAG", "[V:1](3[G/B/]2AG"),                         # a chord's length after it in a tuplet
    ("grace", "[V:1]G6|]", "[V:1]G6 {a}|]"),                               # grace notes leading to no note
    ("chord", "d4- d2 B2", "d4- d2 [B2d]"),                               # one chord, two lengths
    ("duration", "[V:1]c2 d2 (e2 d2)|[V:2]C,2 B,,2 C,2 D,2|", "[V:1]c2 d2 (e2 d4)|[V:2]C,2 B,,2 C,2 D,4|"),
    ("duration", "[V:1]G6|]", "[V:1]G5 z|]"),                               # no note head lasts 5 eighths
    ("bars", "[V:2]G,,4 G,2 D,2|", "[V:2]G,,4 G,2 D,|"),                  # voices last differently
    ("key", "K:G", "K:Fb"),                                               # 8 flats
    ("key", "[V:1]c2 d2", "[V:1][K:D]c2 d2"),                             # a key change in one voice only
    ("repeat", "[V:1]d4- d2 B2|", "[V:1]d4- d2 B2:|"),                    # a repeat in one voice only
    ("range", "[V:2]C,2 B,,2", "[V:2]C,,,2 B,,2"),                        # C1 in a bass
])
def test_each_rule_rejects_its_breakage(rule, old, new):
    assert old in VALID
    report = check_abc(VALID.replace(old, new, 1))
    assert not report.valid
    assert rule in report.failure_counts, report.failures
    failure = next(f for f in report.failures if f.rule == rule)
    assert str(failure).count(":") >= 1 and (failure.bar is not None or rule in ("key",))


def test_lenient_check_keeps_only_alignment_rules():
    broken = VALID.replace("d4- d2 B2", "d4- c2 B2")
    assert not check_abc(broken).valid
    assert check_abc(broken, strict=False).valid


def test_pickup_and_completing_last_bar_are_allowed_but_split_bars_are_not():
    assert check_abc(VALID).valid                                          # pickup of 1/4, last bar of 3/4
    split = VALID.replace("[V:1](3BAG A2 !fermata!G2 z2|[V:2]D,2 D,2 !fermata!G,,2 z2|",
                          "[V:1](3BAG A2 !fermata!G2|[V:2]D,2 D,2 !fermata!G,,2|\n[V:1]z2|[V:2]z2|")
    report = check_abc(split)
    assert not report.valid and report.failure_counts.get("duration") == 4


def test_ties_across_a_barline_keep_their_accidental():
    tied = VALID.replace("[V:1]d4- d2 B2", "[V:1]c4 d2 B2").replace("[V:1]c2 d2 (e2 d2)", "[V:1]c2 d2 (e2 ^c2-)")
    report = check_abc(tied)                                 # `^c2-|c4`: the second c is still C sharp
    assert "tie" not in report.failure_counts, report.failures
    assert "tie" in check_abc(tied.replace("|\n[V:1]c4 d2", "|\n[V:1]=c4 d2")).failure_counts


def test_check_command_judges(tmp_path, capsys):
    import shutil

    path = tmp_path / "piece.abc"
    path.write_text(VALID)
    assert main(["check", str(path), "--judges"]) == 0
    out = capsys.readouterr().out
    if shutil.which("abc2midi"):
        assert "abc2midi: accepts" in out
    path.write_text(VALID.replace("d4- d2 B2", "d4- d2 B2 c2"))
    assert main(["check", str(path), "--judges"]) == 1
    out = capsys.readouterr().out
    if shutil.which("abc2midi"):
        assert "abc2midi: REJECTS" in out and "time units" in out


def test_a_staff_of_five_voices_is_refused():
    voices = "".join(f"V:{i}\n" for i in range(1, 6))
    body = "".join(f"[V:{i}]c4|" for i in range(1, 6))
    piece = f"X:1\n%%score ( 1 2 3 4 5 )\nL:1/4\nM:4/4\nK:C\n{voices}{body}\n"
    report = check_abc(piece)
    assert "structure" in report.failure_counts, report.failures
    assert "structure" not in check_abc(piece.replace("( 1 2 3 4 5 )", "( 1 2 3 4 ) 5")).failure_counts
