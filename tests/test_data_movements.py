"""Movements and parts of a MusicXML file: where movements start, and one movement cut out as its own score."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from score_fixtures import PIANO, STRINGS, VOICE, Movement, Score, musicxml, tune

from notagen.data.movements import extract_movement, part_family, score_outline
from notagen.events import musicxml_events


def test_movements_start_where_numbering_restarts_after_a_final_barline():
    xml = musicxml(Score(STRINGS, [Movement(tune(1), heading="I."), Movement(tune(2), heading="II. Menuetto"),
                                   Movement(tune(3, 16))]))
    outline = score_outline(xml)
    assert [(m.number, m.start, m.end) for m in outline.movements] == [(1, 0, 6), (2, 6, 12), (3, 12, 16)]
    assert [m.heading for m in outline.movements] == ["I.", "II. Menuetto", ""]
    assert outline.parts == [("Violin I", "strings"), ("Violin II", "strings"), ("Viola", "strings"),
                             ("Violoncello", "strings")]


def test_heading_with_the_next_numeral_at_a_new_system_starts_a_movement_without_a_restart():
    # The engraver forgot to restart the numbering of the third movement; its "III." heading still marks it.
    xml = musicxml(Score(STRINGS, [Movement(tune(1), heading="I."), Movement(tune(2), heading="II."),
                                   Movement(tune(3), heading="III. Finale", restart_numbers=False)]))
    assert [m.start for m in score_outline(xml).movements] == [0, 6, 12]
    # A Roman numeral that is not the next movement's (a string number "IV", say) starts nothing.
    xml = musicxml(Score(STRINGS, [Movement(tune(1), heading="I."),
                                   Movement(tune(2), heading="IV", restart_numbers=False, final_barline=False)]))
    assert len(score_outline(xml).movements) == 1


def test_a_numbering_restart_inside_a_song_is_not_a_movement():
    xml = musicxml(Score((VOICE, PIANO), [Movement(tune(1), final_barline=False),
                                          Movement(tune(2), new_system=False)]))
    outline = score_outline(xml)
    assert [(m.start, m.end) for m in outline.movements] == [(0, 12)]
    assert [family for _, family in outline.parts] == ["voice", "keyboard"]


def test_parts_of_unequal_length_are_not_split():
    xml = musicxml(Score(STRINGS[:2], [Movement(tune(1)), Movement(tune(2))]))
    first_part_end = xml.index("</part>")
    cut = xml.rindex("<measure", 0, first_part_end)
    broken = xml[:cut] + xml[xml.index("</measure>", cut) + len("</measure>"):]
    assert len(score_outline(broken).movements) == 1


def test_a_part_with_lyrics_is_a_voice_whatever_its_name():
    clarinet = ("Clarinet in C", "wind.reed.clarinet", "G", 2)
    xml = musicxml(Score((clarinet, PIANO), [Movement(tune(1))]))
    assert [family for _, family in score_outline(xml).parts] == ["woodwind", "keyboard"]
    # Lyrics under the first part's notes (and, as practice scores do, under the piano's): the sung part is a voice.
    sung = xml.replace("</type></note>", "</type><lyric><text>la</text></lyric></note>")
    assert [family for _, family in score_outline(sung).parts] == ["voice", "keyboard"]


def test_part_family_prefers_the_name_over_a_wrong_sound():
    assert part_family("Voice\nGesang", "wind.reed.oboe") == "voice"   # a renamed part keeps its old sound
    assert part_family("Chant", "voice.vocals") == "voice"             # a name the table does not know
    assert part_family("Pianoforte", "") == "keyboard"
    assert part_family("Part 1", "") == "other"


def test_extracted_movement_is_a_whole_score_with_the_attributes_in_force():
    movements = [Movement(tune(1)), Movement(tune(2), fifths=3), Movement(tune(3, 8))]
    xml = musicxml(Score(STRINGS, movements))
    outline = score_outline(xml)
    whole = musicxml_events(xml)
    pieces = [musicxml_events(extract_movement(xml, m.start, m.end)) for m in outline.movements]
    assert sum(len(p) for p in pieces) == len(whole)
    second = ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", extract_movement(xml, 6, 12)))
    for part, (_name, _sound, sign, _line) in zip(second.findall("part"), STRINGS):
        measures = part.findall("measure")
        assert len(measures) == 6 and measures[0].get("number") == "1"
        attributes = measures[0].find("attributes")
        # Divisions, time and clef come from the first movement; the key is the movement's own.
        assert attributes.findtext("divisions") == "1"
        assert attributes.findtext("time/beats") == "4"
        assert attributes.findtext("clef/sign") == sign
        assert attributes.findtext("key/fifths") == "3"
        assert [child.tag for child in attributes] == ["divisions", "key", "time", "clef"]
    # The same notes as in the whole score, from the movement's start.
    offset = 6 * 4
    assert sorted((o - offset, p, d) for o, p, d in whole if offset <= o < 12 * 4) == pieces[1]


def test_timewise_and_unreadable_text_stay_one_piece():
    assert score_outline("<score-timewise><measure number='1'/></score-timewise>").movements == []
    assert score_outline("not xml at all").movements == []
