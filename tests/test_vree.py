"""The patched Vree converters: each notation they used to damage now round-trips note for note (small fixtures)."""

from fractions import Fraction

import pytest

from notagen.convert import abc_to_musicxml, convert_musicxml, convert_score, musicxml_to_abc
from notagen.errors import ConversionError
from notagen.events import musicxml_events
from tests.musicxml_helpers import assert_faithful, attributes, backup, melody, note, part, score, write


@pytest.mark.parametrize("mode, fifths, key", [("aeolian", 2, "K:Baeo"), ("dorian", 2, "K:Edor"),
                                               ("ionian", -1, "K:F"), ("mixolydian", 1, "K:Dmix"),
                                               ("locrian", 0, "K:Bloc")])
def test_modes_keep_their_key_signature(tmp_path, mode, fifths, key):
    # G, F and C carry no accidental: the key signature decides their pitch.
    xml = score(part([[attributes(fifths=fifths, mode=mode)] + melody("G4 F4 C5 B4"), melody("A4 G4 F4 E4")]))
    text, _ = assert_faithful(tmp_path, xml)
    assert key in text.splitlines()


def test_aeolian_read_back_as_minor_not_major():
    events = musicxml_events(abc_to_musicxml("X:1\nL:1/4\nM:4/4\nK:Baeo\nG F C D|]\n"))
    assert [pitch for _, pitch, _ in events] == [67, 66, 61, 62]   # G, F#, C#, D: B minor's signature


@pytest.mark.parametrize("beats", ["3+2", "2+2+3"])
def test_additive_meters(tmp_path, beats):
    total = sum(int(b) for b in beats.split("+"))
    bar = [note("C5", 2) for _ in range(total)]   # eighths, divisions 4
    xml = score(part([[attributes(time=f"{beats}/8")] + bar, bar,
                      [attributes(divisions=None, fifths=None, time="3/8", clef="")] + bar[:3]]))
    text, _ = assert_faithful(tmp_path, xml)
    assert f"M:{beats}/8" in text


def test_grace_notes_at_the_end_of_a_bar_and_of_the_piece(tmp_path):
    xml = score(part([
        [attributes()] + melody("E5 E5 E5 E5")[:3] + [note("E5", 4), note("G5", None, grace=True),
                                                      note("A5", None, grace=True)],
        [note("E5", 8), note("D5", 8), note("G5", None, grace=True), note("A5", None, grace=True)],
    ]))
    text, _ = assert_faithful(tmp_path, xml)
    assert text.count("{") == text.count("}") == 2        # both groups closed: {ga} before each barline
    assert "{ga}|" in text.replace(" ", "")


def test_grace_notes_of_two_voices_in_turn(tmp_path):
    voice1 = [note("E5", 8), note("E5", 8), note("G5", None, grace=True)]
    voice2 = [note("C4", None, 2, grace=True), note("C4", 8, 2), note("D4", 8, 2)]
    xml = score(part([[attributes()] + voice1 + [backup(16)] + voice2, melody("C5 C5 C5 C5")]))
    text, _ = assert_faithful(tmp_path, xml)
    assert text.count("{") == text.count("}") == 2


def test_nested_tuplets(tmp_path):
    # A 3:2 triplet of eighths whose middle eighth is a 5-tuplet of 32nds (combined 15:4), in 2/4, divisions 30.
    outer = (3, 2)
    inner = (15, 4)
    bar1 = [attributes(divisions=30, time="2/4"),
            note("B4", 10, tuplet=outer, notations='<tuplet type="start"/>')]
    bar1 += [note("B4", 2, tuplet=inner, notations='<tuplet type="start"/>' if i == 0 else
                  ('<tuplet type="stop"/>' if i == 4 else "")) for i in range(5)]
    bar1 += [note("B4", 10, tuplet=outer, notations='<tuplet type="stop"/>'), note("C5", 30)]
    xml = score(part([bar1, melody("D5 E5", divisions=30)]))
    text, _ = assert_faithful(tmp_path, xml)
    assert "(15:4:5" in text and "(5:2" not in text
    assert [d for _, _, d in musicxml_events(xml)][:7] == [Fraction(1, 3)] + [Fraction(1, 15)] * 5 + [Fraction(1, 3)]


def test_per_staff_keys_become_per_voice_keys(tmp_path):
    # A piano part: staff 1 in C, staff 2 in D (given after the backup, as some editors write it). MusicXML spells
    # every pitch in full; xml2abc writes F#2 as plain F under staff 2's key, and F4 as plain F under staff 1's.
    bar = [attributes(divisions=4, fifths=None, staves=2, extra='<key number="1"><fifths>0</fifths></key>'),
           note("F4", 16, 1, staff=1), backup(16),
           '<attributes><key number="2"><fifths>2</fifths></key><clef number="2"><sign>F</sign><line>4</line>'
           "</clef></attributes>",
           note("F#2", 16, 2, staff=2)]
    xml = score(part([bar, [note("F4", 16, 1, staff=1), backup(16), note("C3", 16, 2, staff=2)]]))
    text, _ = assert_faithful(tmp_path, xml)
    assert [p for _, p, _ in musicxml_events(xml)] == [42, 65, 48, 65]  # F#2 (staff 2), F4 (staff 1)
    v1, v2 = text.split("\nV:1\n")[1].split("\nV:2\n")
    assert "[K:D]" in v2 and "[K:D]" not in v1
    assert convert_musicxml(xml).voices == {(0, 1): 1, (0, 2): 2}


def test_key_change_in_the_middle_of_a_bar(tmp_path):
    bar = [attributes(fifths=0), note("F4", 4), note("C5", 4),
           '<attributes><key><fifths>2</fifths></key></attributes>', note("F#4", 4), note("C#5", 4)]
    xml = score(part([bar, melody("F#4 C#5 G4 A4")]))
    text, _ = assert_faithful(tmp_path, xml)
    assert [p for _, p, _ in musicxml_events(xml)][:4] == [65, 72, 66, 73]
    assert "[K:D]" in text.split("|")[0]               # written where it happens, inside bar 1


def test_sixty_fourth_notes_keep_their_time(tmp_path):
    bar = [attributes(divisions=16)] + [note("C5" if i % 2 else "D5", 1) for i in range(64)]
    xml = score(part([bar, bar, melody("C5 D5 E5 F5", divisions=16)]))
    assert_faithful(tmp_path, xml)


def test_seventeen_note_tuplet(tmp_path):
    # 17 eighths in the time of 3 (3/34 of a quarter each), then an eighth: a 2/4 bar in 34 divisions per quarter.
    bar = [note("C5", 3, tuplet=(17, 3), notations='<tuplet type="start"/>' if i == 0 else
                ('<tuplet type="stop"/>' if i == 16 else "")) for i in range(17)] + [note("G4", 17)]
    xml = score(part([[attributes(divisions=34, time="2/4")] + bar, bar, bar]))
    text, _ = assert_faithful(tmp_path, xml)
    assert "(17:3:17" in text


def test_wedge_stopped_before_it_starts_does_not_shift_the_voice(tmp_path):
    # The stop (at beat 4 of a 4/4 bar) comes before the start (in a 2/4 bar): v143 wrote the stop into the 2/4 bar
    # at beat 4, after a spacer rest, and every later note came a half note late.
    stop = '<direction><direction-type><wedge type="stop" number="1"/></direction-type></direction>'
    start = '<direction><direction-type><wedge type="crescendo" number="1"/></direction-type></direction>'
    xml = score(part([[attributes()] + melody("C5 D5 E5") + [stop] + melody("F5"),
                      [attributes(divisions=None, fifths=None, time="2/4", clef=""), start] + melody("G5 A5"),
                      melody("B5 C6")]))
    text, _ = assert_faithful(tmp_path, xml)
    assert "x" not in text.split("V:1\n")[-1]          # no spacer rest


def test_converter_crash_names_feature_part_and_bar(tmp_path):
    xml = score(part([[attributes()] + melody("C5 D5 E5 F5"),
                      [attributes(divisions=None, fifths=None, time="7.5/8", clef="")] + melody("C5 D5 E5 F5")]),
                names={"P1": "Flute"})
    path = write(tmp_path, xml)
    with pytest.raises(ConversionError) as caught:
        convert_score(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: xml2abc cannot convert the attributes (key, time or clef) in part 1 (Flute), "
                              "bar 2: ValueError")
    assert "\n" not in message


def test_raw_output_is_the_reference_dialect_for_plain_scores():
    xml = score(part([[attributes(fifths=-1, mode="major", time="3/4")] + melody("F4 A4 C5"), melody("F5 E5 D5")]))
    assert musicxml_to_abc(xml).splitlines()[2:7] == ["L:1/8", "M:3/4", "K:F", 'V:1 treble nm="P1"', "V:1"]


def test_accidentals_after_a_tie_into_the_bar(tmp_path):
    # G#4 tied over the barline (the second note without its stop mark, as some editors write it), then G#4 in the
    # same bar: v143 wrote `^G2- | ^G2 G`, and abc2xml does not let a tied note's sharp hold: G natural came back.
    xml = score(part([[attributes(time="2/4")] + [note("C5", 4), note("G#4", 4, tie="start")],
                      [note("G#4", 4), note("G#4", 2), note("G4", 2)],
                      [note("G#4", 4, tie="start"), note("G#4", 2, tie="stop"), note("G#4", 2)]]))
    text, _ = assert_faithful(tmp_path, xml)
    assert "| ^G2 ^G =G |" in text and "| ^G2- G ^G |" in text
