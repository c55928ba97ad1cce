"""Rendering a real chorale: SVG/PNG pages, MIDI with every note, non-silent WAV, GM programs from part names."""

import shutil
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from notagen.instruments import gm_program
from notagen.render import find_soundfont, render_score, set_instruments


@pytest.fixture(scope="module")
def chorale_xml() -> str:
    from music21 import corpus

    from notagen.convert import score_to_musicxml

    return score_to_musicxml(corpus.getWork("bach/bwv66.6"))


def sounding_notes(musicxml: str) -> int:
    """Notes that start a sound: pitched, not the continuation of a tie."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(musicxml.encode() if musicxml.lstrip().startswith("<?xml") else musicxml)
    count = 0
    for note in root.iter("note"):
        if note.find("rest") is not None or note.find("pitch") is None:
            continue
        if any(tie.get("type") == "stop" for tie in note.findall("tie")):
            continue
        count += 1
    return count


def test_chorale_renders_pages_midi_and_audio(chorale_xml, tmp_path):
    result = render_score(chorale_xml, tmp_path, "chorale")
    svgs, pngs = result.files["svg"], result.files["png"]
    assert svgs and len(svgs) == len(pngs)
    assert all(p.stat().st_size > 10_000 for p in svgs)
    assert "<svg" in svgs[0].read_text()[:2000]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 10_000

    midi = mido.MidiFile(result.files["midi"][0])
    notes = sum(1 for track in midi.tracks for msg in track if msg.type == "note_on" and msg.velocity > 0)
    assert notes == sounding_notes(chorale_xml) == 163
    programs = {msg.program for track in midi.tracks for msg in track if msg.type == "program_change"}
    assert programs == {52}  # Soprano/Alto/Tenor/Bass → Choir Aahs
    assert set(result.programs.values()) == {52}

    if shutil.which("fluidsynth") is None or find_soundfont() is None:
        assert "wav" in result.skipped
        pytest.skip("fluidsynth or a soundfont is missing: WAV skipped with a warning")
    with wave.open(str(result.files["wav"][0])) as wav:
        assert wav.getframerate() == 44100
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        seconds = wav.getnframes() / wav.getframerate()
    assert 15 < seconds < 60
    assert np.abs(frames).max() > 1000 and np.sqrt(np.mean(frames.astype(float) ** 2)) > 100


def test_only_asked_formats_are_written(chorale_xml, tmp_path):
    result = render_score(chorale_xml, tmp_path, "c", formats=["midi"])
    assert set(result.files) == {"midi"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mid"]


def test_missing_fluidsynth_skips_wav_with_a_reason(chorale_xml, tmp_path, monkeypatch):
    import notagen.render as render

    real_which = shutil.which
    monkeypatch.setattr(render.shutil, "which", lambda name: None if name == "fluidsynth" else real_which(name))
    result = render_score(chorale_xml, tmp_path, "c", formats=["midi", "wav"])
    assert "midi" in result.files and "wav" not in result.files
    assert "fluidsynth not found" in result.skipped["wav"]


def test_gm_programs_from_part_names():
    assert gm_program("Violin I") == 40 and gm_program("Viola") == 41 and gm_program("Violoncello") == 42
    assert gm_program("Contrabass") == 43 and gm_program("Flute 1") == 73 and gm_program("Piano") == 0
    assert gm_program("Harpsichord") == 6 and gm_program("Soprano") == 52 and gm_program("Something") == 0
    xml = ('<score-partwise><part-list><score-part id="P1"><part-name>Cello</part-name></score-part>'
           '<score-part id="P2"><part-name>Flute</part-name></score-part><score-part id="P3"><part-name/>'
           '</score-part></part-list><part id="P3"><measure><attributes><key><fifths>-8</fifths></key>'
           '<clef><sign>C</sign></clef></attributes></measure></part></score-partwise>')
    text, programs = set_instruments(xml)
    assert programs == {"P1": 42, "P2": 73, "P3": 41}           # an unnamed part in alto clef plays as a viola
    assert "<midi-program>43</midi-program>" in text and "<midi-program>74</midi-program>" in text
    assert "<instrument-sound>strings.cello</instrument-sound>" in text
    assert "<fifths>4</fifths>" in text                             # F-flat major is written as E major


def test_soundfont_override(tmp_path, monkeypatch):
    font = tmp_path / "mine.sf2"
    font.write_bytes(b"RIFF")
    monkeypatch.setenv("NOTAGEN_SOUNDFONT", str(font))
    assert find_soundfont() == Path(font)
