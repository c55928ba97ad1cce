"""Score ⇄ ABC conversion: real pieces, the .mxl and lyric-number workarounds, bad inputs, the CLI."""

import io
import zipfile
from pathlib import Path

import pytest
from music21 import corpus

from notagen.abc.interleave import check_alignment, interleave
from notagen.abc.text import ACCIDENTALS_DIRECTIVE, bar_count, declare_octave_accidentals, voice_names
from notagen.cli import main
from notagen.convert import (
    _is_line_barred,
    abc_to_musicxml,
    abc_tune_texts,
    detect_format,
    read_mxl,
    score_to_abc,
    score_to_musicxml,
)
from notagen.errors import ConversionError, InputError, NotaGenError
from notagen.events import compare_events, musicxml_events
from tests.musicxml_helpers import attributes, backup, forward, melody, note, part, score

FIXTURES = Path(__file__).parent / "fixtures"
CHORALE = corpus.getWork("bach/bwv66.6")
QUARTET = corpus.getWork("mozart/k80/movement3")
MUSICXML_ROOT_MXL = corpus.getWork("bach/bwv113.8")  # its archive's root file is *.musicxml

ESSEN_STYLE = "X:1\nT:Test\nM:2/4\nL:1/16\nK:C\nc4d4 | e4f4 | g8\ng4f4 | e4d4 | c8\n"


def _round_trip(path: Path, **kwargs) -> tuple:
    source = musicxml_events(score_to_musicxml(path, **kwargs))
    converted = musicxml_events(abc_to_musicxml(score_to_abc(path, **kwargs)))
    return compare_events(source, converted, durations=True), source


def test_chorale_to_abc():
    abc = score_to_abc(CHORALE)
    lines = abc.splitlines()
    assert lines[:5] == ["%%score [ 1 | 2 | 3 | 4 ]", "L:1/8", "Q:1/4=96", "M:4/4", "K:F#min"]
    assert lines[5] == 'V:1 treble nm="Soprano" snm="S."'
    assert all(ord(ch) < 128 for ch in abc)
    assert voice_names(abc) == ["1", "2", "3", "4"]
    assert check_alignment(abc) == (True, True, True)
    comparison, source = _round_trip(CHORALE)
    assert comparison.exact and len(source) == 163


def test_quartet_round_trip_and_interleaved_output():
    comparison, source = _round_trip(QUARTET)
    assert comparison.exact and len(source) > 500
    standard = score_to_abc(QUARTET)
    assert score_to_abc(QUARTET, interleaved=True) == interleave(standard)
    assert bar_count(interleave(standard)) == 52


def test_mxl_whose_root_file_is_musicxml():
    names = zipfile.ZipFile(MUSICXML_ROOT_MXL).namelist()
    # xml2abc v143 only opens a non-META member ending in .xml: there is none here.
    assert not [n for n in names if not n.startswith("META") and n.lower().endswith(".xml")]
    assert read_mxl(MUSICXML_ROOT_MXL).lstrip().startswith(b"<?xml")
    comparison, source = _round_trip(MUSICXML_ROOT_MXL)
    assert comparison.exact and source


def test_non_numeric_lyric_numbers(tmp_path):
    from abctoolkit import xml2abc

    from notagen.convert import _XML2ABC_OPTIONS

    xml = read_mxl(MUSICXML_ROOT_MXL).replace(b'number="1"', b'number="chorus"')
    assert b'<lyric default-y="-70" number="chorus"' in xml
    path = tmp_path / "sibelius_export.musicxml"
    path.write_bytes(xml)
    # Plain xml2abc crashes on it (what the reference pipeline hits on Sibelius exports)…
    xml2abc.abcOut = xml2abc.ABCoutput("x.abc", "", 0, _XML2ABC_OPTIONS)
    xml2abc.abcOut.outfile = io.StringIO()
    with pytest.raises(ValueError):
        xml2abc.Parser(_XML2ABC_OPTIONS).parse(io.BytesIO(xml))
    # …we renumber the lyrics and convert the same music.
    assert score_to_abc(path) == score_to_abc(MUSICXML_ROOT_MXL)
    assert _round_trip(path)[0].exact


def test_utf16_musicxml():
    path = Path(corpus.__file__).parent / "monteverdi" / "madrigal.5.3.mxl"
    assert read_mxl(path).startswith(b"\xff\xfe")          # UTF-16 inside the archive
    abc = score_to_abc(path)
    assert "K:F" in abc and len(voice_names(abc)) == 6


def test_lindenbaum_converts():
    abc = score_to_abc(corpus.getWork("schubert/Lindenbaum.xml"))
    assert len(voice_names(abc)) == 5 and check_alignment(abc)[1]   # voice + piano with two voices per staff


def test_kern_input():
    abc = score_to_abc(corpus.getWork("bach/bwv277.krn"))
    assert len(voice_names(abc)) == 4 and check_alignment(abc)[1]


def test_folk_abc_goes_through_abc2xml_exactly():
    path = FIXTURES / "abc_acacia_reel.abc"
    assert _is_line_barred(path.read_text())
    abc = score_to_abc(path)
    assert '"_mf"' in abc and "K:G" in abc and "::" in abc      # annotation and repeat structure kept
    assert _round_trip(path)[0].exact


def test_essen_style_tune_goes_through_music21(tmp_path, capsys):
    path = tmp_path / "essen.abc"
    path.write_text(ESSEN_STYLE)
    assert not _is_line_barred(ESSEN_STYLE)
    abc = score_to_abc(path)
    assert abc.splitlines()[-1].count("|") == 6   # every line end is a bar end: 6 bars, not 5
    assert main(["convert", str(path), str(tmp_path / "essen.musicxml")]) == 0
    assert "note: read by music21: one voice whose line ends are bar ends (Essen style)" in capsys.readouterr().out


def test_line_ends_at_any_barline():
    assert _is_line_barred("K:C\nV:1\nabc d|]\nV:2\nCDE F|]\n")          # voice 1's last line ends in |]
    assert _is_line_barred("K:C\nabc d:|2\nab c2 \\\ncd|[K:D] ef|[M:3/4]\nd3|]\n")
    assert not _is_line_barred("K:C\nabc d|e\nfg|]\n")


def _piano_with_key_change_and_rests() -> str:
    bars = [[attributes(staves=2, extra='<clef number="2"><sign>F</sign><line>4</line></clef>')] +
            melody("C5 D5 E5 F5", staff=1) + [backup(16), note("C3", 16, 2, staff=2)],
            melody("G5 A5 B5 C6", staff=1) + [backup(16), forward(16)],
            ['<attributes><key><fifths>2</fifths></key></attributes>'] + melody("F#5 E5 D5 C#5", staff=1) +
            [backup(16), note("F#2", 16, 2, staff=2)]]
    return score(part(bars), names={"P1": "Piano"})


def test_standard_abc_reads_back_through_abc2xml(tmp_path):
    """xml2abc's standard ABC ends each voice with |]: it used to go to music21, which made one part per voice,
    ignored the inline [K:D] (F# became F) and dropped the x8 rest."""
    source = tmp_path / "piano.musicxml"
    source.write_text(_piano_with_key_change_and_rests())
    standard = tmp_path / "piano.abc"
    assert main(["convert", str(source), str(standard)]) == 0
    text = standard.read_text()
    assert "[K:D]" in text and "x8" in text and _is_line_barred(text)
    back = tmp_path / "back.musicxml"
    assert main(["convert", str(standard), str(back)]) == 0
    xml = back.read_text()
    assert xml.count("<part id=") == 1
    assert compare_events(musicxml_events(source.read_text()), musicxml_events(xml), durations=True).exact


def test_abc2xml_failure_is_not_hidden_behind_another_reader(tmp_path):
    path = tmp_path / "broken.abc"
    path.write_text("X:1\nL:1/8\nM:2/4\nK:C\nc2 d2|\nd2 c2|]\nV:2\n |\n")   # music21 reads it, somehow
    with pytest.raises(ConversionError, match=r"abc2xml cannot parse the ABC: Syntax error at column 1 "):
        score_to_musicxml(path)


def test_abc_that_abc2xml_must_round_is_not_written(tmp_path, capsys):
    path = tmp_path / "tiny.abc"
    path.write_text("X:1\nL:1/8\nM:2/4\nK:C\nc/32 z/32 z/16 z/ c3|]\n")   # a 1/256 note
    out = tmp_path / "tiny.musicxml"
    assert main(["convert", str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert "not written: abc2xml changed the music while reading the ABC: duration too small: rounded" in err
    assert not out.exists()
    assert main(["convert", str(path), str(out), "--no-verify"]) == 0
    assert "note: abc2xml changed the music while reading the ABC" in capsys.readouterr().out


def test_multi_tune_abc(tmp_path):
    path = tmp_path / "two.abc"
    path.write_text("%%abc-version 2.1\n% a comment\n" + ESSEN_STYLE.replace("K:C", "K:G")
                    + "\nX:2\nT:Second\nM:3/4\nL:1/8\nK:D\nd2 e2 f2 | a6 |]\n")
    assert len(abc_tune_texts(path.read_text())) == 2
    assert "K:D" in score_to_abc(path, tune=2)
    with pytest.raises(InputError, match="holds 2 tunes"):
        score_to_abc(path)
    with pytest.raises(InputError, match="tune 3 out of range"):
        score_to_abc(path, tune=3)


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    files = {
        "corrupt zip": ("broken.mxl", b"PK\x03\x04 this is not really a zip archive"),
        "non-XML": ("notes.xml", b"these are my notes, not MusicXML\n"),
        "empty file": ("empty.musicxml", b""),
        "binary file": ("blob.xml", bytes(range(256)) * 4),
        "not a score": ("page.xml", b"<html><body>hello</body></html>\n"),
    }
    paths = {}
    for kind, (name, data) in files.items():
        paths[kind] = tmp_path / name
        paths[kind].write_bytes(data)
    paths["missing path"] = tmp_path / "nowhere.mxl"
    return paths


@pytest.mark.parametrize("kind, reason", [("corrupt zip", "corrupt .mxl"), ("non-XML", "not XML"),
                                          ("empty file", "empty file"), ("binary file", "binary file"),
                                          ("not a score", "not a MusicXML score"), ("missing path", "no such file")])
def test_bad_input_gives_one_line_error(tmp_path, capsys, kind, reason):
    path = _bad_inputs(tmp_path)[kind]
    with pytest.raises(NotaGenError) as caught:
        score_to_abc(path)
    message = str(caught.value)
    assert reason in message and str(path) in message and "\n" not in message
    assert main(["convert", str(path), str(tmp_path / "out.abc")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]
    assert not (tmp_path / "out.abc").exists()


def test_detect_format_by_extension_and_content(tmp_path):
    assert detect_format(CHORALE) == "mxl"
    assert detect_format("x.krn") == "kern" and detect_format("x.musicxml") == "musicxml"
    sniffed = tmp_path / "score"
    sniffed.write_bytes(read_mxl(CHORALE))
    assert detect_format(sniffed) == "musicxml"
    sniffed.write_text(ESSEN_STYLE)
    assert detect_format(sniffed) == "abc"
    sniffed.write_text("just words")
    with pytest.raises(InputError, match="cannot tell"):
        detect_format(sniffed)


def test_abc_to_musicxml_accepts_generated_text():
    standard = score_to_abc(QUARTET)
    full = musicxml_events(abc_to_musicxml(interleave(standard)))
    reduced = interleave(standard, reduce_rests=True)
    header, body = reduced.split("[V:1]", 1)
    lines = ("[V:1]" + body).splitlines()
    generated = "%Classical\n%Mozart, Wolfgang Amadeus\n%Chamber\n%end\n" + header + "".join(
        f"[r:{i}/{len(lines) - 1 - i}]{line}\n" for i, line in enumerate(lines))
    assert compare_events(full, musicxml_events(abc_to_musicxml(generated)), durations=True).exact


def test_abc_to_musicxml_errors():
    with pytest.raises(ConversionError, match="empty"):
        abc_to_musicxml("  \n")
    with pytest.raises(ConversionError) as caught:
        abc_to_musicxml("L:1/8\nM:2/4\nK:C\n[V:1]c2 d2|[V:2] |\n")   # an empty voice segment
    assert "Syntax error" in str(caught.value) and "\n" not in str(caught.value)


def test_repeated_calls_do_not_leak_state():
    first = score_to_abc(CHORALE)
    score_to_abc(QUARTET)
    assert score_to_abc(CHORALE) == first
    xml = abc_to_musicxml(first)
    abc_to_musicxml(score_to_abc(QUARTET))
    assert abc_to_musicxml(first) == xml


def test_convert_cli(tmp_path):
    out = tmp_path / "chorale.abc"
    assert main(["convert", str(CHORALE), str(out)]) == 0
    # files for users say the accidental rule abc2xml and abcm2ps follow, which abc2midi does not assume
    assert out.read_text() == declare_octave_accidentals(score_to_abc(CHORALE))
    assert out.read_text().startswith(ACCIDENTALS_DIRECTIVE + "\n")
    assert main(["convert", str(CHORALE), str(tmp_path / "i.abc"), "--interleaved"]) == 0
    assert (tmp_path / "i.abc").read_text() == declare_octave_accidentals(interleave(score_to_abc(CHORALE)))
    for suffix in (".musicxml", ".mxl"):
        target = tmp_path / f"back{suffix}"
        assert main(["convert", str(tmp_path / "i.abc"), str(target)]) == 0
        xml = read_mxl(target) if suffix == ".mxl" else target.read_bytes()
        assert compare_events(musicxml_events(score_to_musicxml(CHORALE)), musicxml_events(xml)).exact
    assert main(["convert", str(CHORALE), str(tmp_path / "x.pdf")]) == 1
