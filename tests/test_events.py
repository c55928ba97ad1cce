"""Note events of MusicXML (ties merged, grace notes out, chords in, backup/forward) and their comparison."""

from fractions import Fraction

import pytest
from music21 import corpus

from notagen.convert import score_to_musicxml
from notagen.events import EventComparison, compare_events, musicxml_events, shift_pitches

# Two voices on one staff, divisions 2 per quarter: a tie over the barline, a chord, a grace note, backup/forward.
SMALL = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1">
  <part-list><score-part id="P1"><part-name>X</part-name></score-part></part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions>2</divisions><time><beats>2</beats><beat-type>4</beat-type></time></attributes>
      <note><rest/><duration>2</duration><voice>1</voice></note>
      <note><pitch><step>C</step><octave>4</octave></pitch><duration>2</duration><voice>1</voice>
        <tie type="start"/></note>
      <backup><duration>4</duration></backup>
      <forward><duration>2</duration></forward>
      <note><grace/><pitch><step>D</step><octave>3</octave></pitch><voice>2</voice></note>
      <note><pitch><step>B</step><alter>-1</alter><octave>2</octave></pitch><duration>2</duration><voice>2</voice></note>
    </measure>
    <measure number="2">
      <attributes><divisions>4</divisions></attributes>
      <note><pitch><step>C</step><octave>4</octave></pitch><duration>2</duration><voice>1</voice>
        <tie type="stop"/></note>
      <note><pitch><step>E</step><octave>4</octave></pitch><duration>6</duration><voice>1</voice></note>
      <note><chord/><pitch><step>G</step><alter>1</alter><octave>4</octave></pitch><duration>6</duration>
        <voice>1</voice></note>
    </measure>
  </part>
</score-partwise>
"""


def test_small_score_events():
    assert musicxml_events(SMALL) == [
        (Fraction(1), 46, Fraction(1)),      # Bb2 after the forward; the grace D3 is not an event
        (Fraction(1), 60, Fraction(3, 2)),   # C4 quarter tied to an eighth (divisions change to 4)
        (Fraction(5, 2), 64, Fraction(3, 2)),
        (Fraction(5, 2), 68, Fraction(3, 2)),  # chord note shares the onset
    ]


def test_chorale_events_match_music21():
    path = corpus.getWork("bach/bwv66.6")
    events = musicxml_events(score_to_musicxml(path))
    score = corpus.parse("bach/bwv66.6").stripTies()
    expected = sorted(
        (Fraction(note.getOffsetInHierarchy(score)).limit_denominator(96), pitch.midi,
         Fraction(note.quarterLength).limit_denominator(96))
        for note in score.recurse().notes for pitch in note.pitches)
    assert events == expected
    assert len(events) == 163   # 165 written notes, two of them tied into the previous one


def test_compare_events():
    source = [(Fraction(0), 60, Fraction(1)), (Fraction(1), 62, Fraction(1)), (Fraction(2), 64, Fraction(1))]
    assert compare_events(source, source) == EventComparison(3, 3, 3, True, 1.0, None)
    nearly = [(Fraction(0), 60, Fraction(1)), (Fraction(1001, 1000), 62, Fraction(1)), (Fraction(2), 65, Fraction(1))]
    result = compare_events(source, nearly)
    assert (result.matched, result.exact, result.first_mismatch) == (2, False, Fraction(2))
    assert result.ratio == pytest.approx(2 / 3)
    longer = [(Fraction(0), 60, Fraction(2))] + source[1:]
    assert compare_events(source, longer).exact
    assert not compare_events(source, longer, durations=True).exact
    assert compare_events([], []).ratio == 1.0


def test_shift_pitches():
    assert shift_pitches([(Fraction(0), 60, Fraction(1))], -3) == [(Fraction(0), 57, Fraction(1))]


def test_not_a_score():
    with pytest.raises(ValueError, match="not valid XML"):
        musicxml_events("<score-partwise>")
    with pytest.raises(ValueError, match="not a MusicXML score"):
        musicxml_events("<html></html>")
