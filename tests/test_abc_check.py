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
    assert "INVALID" in out and "bar 2: V:1 7/2" in out
    assert main(["check", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["misaligned_bars"] == 1 and data["bar_durations"]["1"][1] == "7/2"
    assert main(["check", str(tmp_path / "missing.abc")]) == 1
    assert "no such file" in capsys.readouterr().err
