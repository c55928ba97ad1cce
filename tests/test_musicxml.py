"""MusicXML before xml2abc: each repair keeps the notes (round trip with durations), each refusal is one line naming
the feature, the part and the bar; bar features for reports."""

import pytest

from notagen.convert import abc_to_musicxml, convert_score
from notagen.errors import ConversionError
from notagen.events import musicxml_events
from notagen.musicxml import bar_features, prepare_musicxml
from tests.musicxml_helpers import assert_faithful, attributes, backup, melody, note, part, score, write


def test_divisions_change_inside_a_bar(tmp_path):
    # 1 → 8 → 38 divisions per quarter within and across bars; every note is a quarter or a half.
    bar1 = [attributes(divisions=1)] + [note("C5", 1), note("C5", 1)] + \
        ["<attributes><divisions>8</divisions></attributes>", note("C5", 8), note("C5", 8)]
    bar2 = [note("C5", 16), "<attributes><divisions>38</divisions></attributes>", note("C5", 76)]
    xml = score(part([bar1, bar2]))
    _, conversion = assert_faithful(tmp_path, xml)
    assert conversion.changes == []                     # a re-encoding, nothing a reader would see


def test_missing_divisions_default_to_one(tmp_path):
    xml = score(part([[attributes(divisions=None)] + [note("C4", 4)], [note("E4", 2), note("G4", 2)]]))
    text, conversion = assert_faithful(tmp_path, xml)
    assert "C8" in text and "C/0" not in text
    assert conversion.changes == ["part 1 (P1) has no <divisions> before its first note: read as 1 per quarter note "
                                  "(the MusicXML default)"]


def test_hidden_notes_become_visible(tmp_path):
    hidden = [note("E5", 4, attrs='print-object="no"'), note("G5", 4, chord=True, attrs='print-object="no"')]
    xml = score(part([[attributes()] + melody("C5 D5") + hidden + melody("F5"), melody("G5 A5 B5 C6")]))
    _, conversion = assert_faithful(tmp_path, xml)
    assert conversion.changes == ["hidden notes in part 1 (P1), bar 1: written as visible notes (ABC has no hidden "
                                  "notes)"]


def test_letter_voices_and_an_undeclared_part(tmp_path):
    bar = [attributes(), note("C5", 16, "X"), backup(16), note("E4", 16, "Y")]
    xml = score(part([bar, [note("D5", 16, "X"), backup(16), note("F4", 16, "Y")]]),
                part([[attributes(clef="F4"), note("C3", 16)], [note("G2", 16)]], "P2"), declare=False)
    text, _ = assert_faithful(tmp_path, xml)
    assert text.count("\nV:") >= 6                       # 3 voices defined and written


def test_ties_to_another_pitch_are_dropped_and_enharmonic_ties_respelled(tmp_path):
    bar1 = [attributes()] + melody("C5 D5 E5") + [note("C5", 4, tie="start")]
    bar2 = [note("C#5", 4)] + melody("D5") + [note("A#4", 8, tie="start")]
    bar3 = [note("Bb4", 8, tie="stop"), note("C5", 8)]
    xml = score(part([bar1, bar2, bar3]))
    text, conversion = assert_faithful(tmp_path, xml)
    assert conversion.changes == ["ties not followed by a note of the same pitch in part 1 (P1), bar 1: dropped",
                                  "notes tied to an enharmonic spelling in part 1 (P1): written Bb4 as A#4 in bar 3"]


def test_unreadable_marks_are_dropped_with_a_note(tmp_path):
    pedal = '<direction><direction-type><pedal type="change"/></direction-type></direction>'
    tempo = ('<direction><direction-type><metronome><beat-unit>quarter</beat-unit><beat-unit>half</beat-unit>'
             "</metronome></direction-type></direction>")
    odd = note("F#5", 4, inner="<accidental>natural-sharp</accidental>")
    xml = score(part([[attributes(fifths=1, mode="hypodorian"), tempo] + melody("C5 D5") + [pedal, odd] +
                      melody("G5"), melody("A5 B5 C6 D6")]))
    _, conversion = assert_faithful(tmp_path, xml)
    assert [change.split(" in part")[0] for change in conversion.changes] == [
        "'natural-sharp' accidental signs (the pitch is kept)", "tempo marks without a number",
        "pedal marks of type 'change'", "key mode 'hypodorian' (read as major)"]


def test_percussion_clef_over_pitched_notes(tmp_path):
    xml = score(part([[attributes()] + melody("C5 D5 E5 F5"),
                      ["<attributes><clef><sign>percussion</sign></clef></attributes>"] + melody("G4 A4 B4 C5")]))
    text, conversion = assert_faithful(tmp_path, xml)
    assert "perc" not in text and conversion.changes[0].startswith("a percussion clef over pitched notes")


def test_timewise_score(tmp_path):
    xml = ('<?xml version="1.0"?><score-timewise><part-list><score-part id="P1"><part-name>A</part-name>'
           '</score-part></part-list><measure number="1"><part id="P1">' + attributes() +
           "".join(melody("C5 D5 E5 F5")) + '</part></measure><measure number="2"><part id="P1">' +
           "".join(melody("G5 F5 E5 D5")) + "</part></measure></score-timewise>")
    assert_faithful(tmp_path, xml)


@pytest.mark.parametrize("bar2, message", [
    ([note(None, 4), '<note><unpitched><display-step>E</display-step><display-octave>4</display-octave></unpitched>'
      "<duration>4</duration><voice>1</voice></note>", note("C5", 8)],
     "unpitched (percussion) notes in part 1 (Flute), bar 2: abc2xml reads a percussion voice back as other notes"),
    ([note("C5", 4, alter="0.5")] + melody("D5 E5 F5"),
     "a microtonal pitch (alter 0.5) in part 1 (Flute), bar 2: ABC has no microtonal accidentals"),
    (['<attributes><key><fifths>-9</fifths></key></attributes>'] + melody("C5 D5 E5 F5"),
     "a key signature of 9 flats in part 1 (Flute), bar 2: ABC keys have at most 7 sharps or flats"),
    ([note("C5", 1), note(None, 127)],
     "a note of 1/128 (shorter than a 64th) in part 1 (Flute), bar 2: abc2xml reads note values down to a 64th"),
])
def test_what_abc_cannot_carry_is_refused_in_one_line(tmp_path, capsys, bar2, message):
    from notagen.cli import main

    xml = score(part([[attributes(divisions=32)] + melody("C5 D5 E5 F5", divisions=32),
                      [b.replace("<duration>4</duration>", "<duration>32</duration>") for b in bar2]]),
                names={"P1": "Flute"})
    path = write(tmp_path, xml)
    with pytest.raises(ConversionError) as caught:
        convert_score(path)
    assert str(caught.value) == f"{path}: {message}"
    assert main(["convert", str(path), str(tmp_path / "out.abc")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"notagen: error: {path}: {message}"]
    assert not (tmp_path / "out.abc").exists()


def test_rests_only_names_the_real_file(tmp_path):
    path = write(tmp_path, score(part([[attributes(), note(None, 16)], [note(None, 16)]])), "rests.musicxml")
    with pytest.raises(ConversionError, match=f"^{path}: nothing to convert: it has no notes, only rests$"):
        convert_score(path)


def test_plain_scores_pass_through_unchanged():
    xml = score(part([[attributes()] + melody("C5 D5 E5 F5")])).encode()
    prepared = prepare_musicxml(xml, "x")
    assert prepared.data is xml and prepared.changes == []


def test_bar_features():
    bar1 = [attributes()] + melody("C5 D5 E5") + [note("E5", 4, tie="start"), note("G5", None, grace=True)]
    bar2 = [note("E5", 4, 2, tie="stop"), note("D5", 12, 2), backup(20), note("G4", 16, attrs='print-object="no"')]
    features = bar_features(score(part([bar1, bar2])))
    assert features[(0, 0)] == ["grace notes", "grace notes at the end of the bar (after-graces)"]
    assert features[(0, 1)] == ["a tie across voices", "a <backup> past the bar's start", "hidden notes"]


def test_a_hidden_playback_voice_beside_shown_notes_is_dropped(tmp_path):
    # Voice 1 shows a trill on G4; voice 2 plays it, hidden, in values no notation has (5/12 of a quarter).
    trill = [note("G4" if i % 2 == 0 else "A4", length, 2, attrs='print-object="no"')
             for i, length in enumerate([5, 3, 3, 3, 3, 3, 4])]
    bar = [attributes(divisions=12, time="2/4"), note("G4", 24, notations="<ornaments><trill-mark/></ornaments>"),
           backup(24)] + trill
    xml = score(part([bar, melody("C5 B4", divisions=12)]))
    conversion = convert_score(write(tmp_path, xml))
    assert conversion.verification.exact and conversion.verification.total_source == 3
    assert conversion.changes == ["hidden voices beside shown notes (written-out ornaments for playback) in part 1 "
                                  "(P1), bar 1: dropped"]
    back = musicxml_events(abc_to_musicxml(conversion.text))
    assert [(float(onset), pitch) for onset, pitch, _ in back] == [(0.0, 67), (2.0, 72), (3.0, 71)]
