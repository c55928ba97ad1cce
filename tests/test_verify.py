"""Verification: what changed, in words (voice, bar, notes, the notation there), and the convert CLI acting on it."""

from fractions import Fraction

from notagen.cli import main
from notagen.convert import convert_score
from notagen.events import read_events
from notagen.verify import compare_scores, value_name
from tests.musicxml_helpers import attributes, backup, melody, note, part, score, write


def _two_voices(tie_across: bool) -> str:
    # Voice 1's G4 is tied to voice 2's G4 on beat 2: one sound, which ABC (ties stay in their voice) cannot write.
    bar1 = [attributes(), note("G4", 4, 1, tie="start" if tie_across else None)] + melody("A4 B4 C5") + \
        [backup(12), note("G4", 2, 2, tie="stop" if tie_across else None), note("F4", 2, 2), note("E4", 8, 2)]
    return score(part([bar1, melody("D5 E5 F5 G5")]), names={"P1": "Piano"})


def test_a_change_is_named_by_voice_bar_notes_and_notation(tmp_path):
    path = write(tmp_path, _two_voices(tie_across=True))
    check = convert_score(path).verification
    assert not check.exact and (check.matched, check.total_source, check.total_converted) == (9, 10, 11)
    assert check.summary() == (
        "the conversion changes the music: 1 of 10 notes not kept and 2 not in the source in 1 bar; first in bar 1 of "
        "part 1 (Piano), voice 1 (V:1): G4 at beat 1 lasts a quarter instead of a dotted quarter; an extra G4 (an "
        "eighth) at beat 2; the bar has a tie across voices")
    assert convert_score(write(tmp_path, _two_voices(tie_across=False), "untied.musicxml")).verification.exact


def test_convert_refuses_to_write_a_changed_score_unless_told(tmp_path, capsys):
    path = write(tmp_path, _two_voices(tie_across=True))
    out = tmp_path / "out.abc"
    assert main(["convert", str(path), str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"notagen: error: {path}: not written: the conversion changes the "
                                               "music:") and "bar 1 of part 1 (Piano), voice 1 (V:1)" in err[0]
    assert not out.exists()
    assert main(["convert", str(path), str(out), "--no-verify"]) == 0
    assert out.exists() and "not verified" in capsys.readouterr().out


def test_differences_in_words():
    source = score(part([[attributes()] + melody("C5 D5 E5 F5"), melody("G5 A5 B5 C6")]))
    changed = score(part([[attributes(), note("C5", 2), note(None, 2), note("E5", 4), note("D5", 4), note("F#5", 4)],
                          melody("G5 A5 B5") + [note(None, 4)], melody("D6 D6 D6 D6")]))
    check = compare_scores(source, changed)
    assert [(d.bar, d.text) for d in check.differences] == [
        (0, "C5 at beat 1 lasts an eighth instead of a quarter"),
        (0, "D5 (a quarter) moved from beat 2 to 3"),
        (0, "E5 (a quarter) moved from beat 3 to 2"),
        (0, "F5 at beat 4 became F#5"),
        (1, "C6 (a quarter) at beat 4 is missing"),
        (2, "an extra D6 (a quarter) at beat 1"), (2, "an extra D6 (a quarter) at beat 2"),
        (2, "an extra D6 (a quarter) at beat 3"), (2, "an extra D6 (a quarter) at beat 4")]
    assert check.first_bar == "bar 1 of part 1 (P1), voice 1"


def test_a_backup_past_the_bar_start_is_clamped_and_reported(tmp_path, capsys):
    # Voice 2 backs up 380 quarters: the converters start it at the bar's start, and so does the verification.
    bar = [attributes(divisions=1), note("F5", 4), backup(384), note("B2", 4, 2)]
    xml = score(part([bar, [note("F5", 4), backup(4), note("B2", 4, 2)]]))
    events = read_events(xml)
    assert events.events[:2] == [(Fraction(0), 47, Fraction(4)), (Fraction(0), 77, Fraction(4))]
    assert events.warnings == ["part 1 (P1), bar 1: a <backup> of 384 quarters goes 380 before the bar's start; "
                               "clamped to the start, as xml2abc does"]
    path = write(tmp_path, xml)
    assert main(["convert", str(path), str(tmp_path / "out.abc")]) == 0
    out = capsys.readouterr().out
    assert "verified: all 4 notes kept" in out and "note: part 1 (P1), bar 1: a <backup> of 384" in out


def test_value_names():
    assert [value_name(Fraction(q)) for q in ("1", "1/2", "3/4", "3", "5/2", "1/3")] == [
        "a quarter", "an eighth", "a dotted eighth", "a dotted half", "5/2 quarters", "1/3 of a quarter"]


def test_a_tie_into_another_voice_without_its_stop_mark_is_named(tmp_path):
    xml = _two_voices(tie_across=True).replace('<tie type="stop"/>', "").replace('<tied type="stop"/>', "")
    events = read_events(xml)
    assert [w.tied_across_voices for e, w in zip(events.events, events.where) if e[1] == 67] == [True]
    check = convert_score(write(tmp_path, xml)).verification
    assert check.summary().endswith("the bar has a tie across voices")
