"""Cleanup rules of the official pipeline, header/body split, prompt lines."""

from music21 import corpus

from notagen.abc.text import (
    bar_count,
    clean_abc,
    original_key,
    prompt_block,
    split_header_body,
    standard_body_start,
    strip_prompt_lines,
    strip_stream_annotations,
    voice_names,
)
from notagen.convert import musicxml_to_abc, score_to_musicxml

# Shaped like xml2abc -d 8 -c 6 -x output.
RAW = """X:1
T:Title
C:Composer
%%score { 1 | 2 }
L:1/8
M:3/4
K:G
V:1 treble nm="Violin"
V:2 bass nm="Piano"
%%MIDI program 40
V:1
"^dolce" d2 e2 f2 | g6 | %2
W:lyrics
V:2
G,6 | G,6 |] %2
w: la la
"""


def test_clean_removes_information_fields_and_keeps_the_rest():
    cleaned = clean_abc(RAW)
    lines = cleaned.splitlines()
    assert not any(line.startswith(("X:", "T:", "C:", "W:", "w:", "%%MIDI")) for line in lines)
    assert lines[:6] == ["%%score { 1 | 2 }", "L:1/8", "M:3/4", "K:G", 'V:1 treble nm="Violin"', 'V:2 bass nm="Piano"']


def test_clean_strips_bar_number_comments_from_body_only():
    cleaned = clean_abc(RAW)
    assert "%2" not in cleaned
    assert '"^dolce" d2 e2 f2 | g6 |' in cleaned
    assert "%%score" in cleaned  # a header directive is not a bar number


def test_clean_drops_blank_lines():
    cleaned = clean_abc(RAW.replace("K:G\n", "K:G\n\n   \n"))
    assert all(line.strip() for line in cleaned.splitlines())


def test_clean_deletes_escaped_quotes_on_body_lines():
    raw = 'L:1/8\nK:C\nV:1\nV:1\n"^say \\"hi\\"" c2 |\n'
    assert '"^say hi" c2 |' in clean_abc(raw)


def test_clean_deletes_annotations_that_contain_a_barline():
    raw = 'L:1/8\nK:C\nV:1\nV:1\n"^a|b" c2 "^x::y" d2 "^ok" e2 |\n'
    body = clean_abc(raw).splitlines()[-1]
    assert '"^a|b"' not in body and '"^x::y"' not in body and '"^ok"' in body


def test_clean_annotation_rules():
    raw = ('L:1/8\nK:C\nV:1\nV:1\n"" c "^cresc......" d "_' + "x" * 45 + '" e "Am" f |\n')
    body = clean_abc(raw).splitlines()[-1]
    assert '""' not in body
    assert '"^cresc."' in body            # runs of one repeated non-alphanumeric character collapse
    assert "x" * 45 not in body           # still longer than 40 characters: deleted
    assert '"Am"' in body                 # chord symbols are not annotations


def test_clean_output_is_ascii():
    raw = 'T:Der Lindenbaum\nL:1/8\nK:C\nV:1 treble nm="Stimme für Gesang"\nV:1\n"^sehr lángsam – ruhig" c2 |\n'
    cleaned = clean_abc(raw)
    assert all(ord(ch) < 128 for ch in cleaned)
    assert 'nm="Stimme fur Gesang"' in cleaned and '"^sehr langsam - ruhig"' in cleaned


def test_clean_real_score_with_german_text_is_ascii():
    xml = score_to_musicxml(corpus.getWork("schubert/Lindenbaum.xml"))
    raw = musicxml_to_abc(xml)
    assert any(ord(ch) >= 128 for ch in raw)   # the raw xml2abc output carries the German text
    cleaned = clean_abc(raw)
    assert all(ord(ch) < 128 for ch in cleaned)


def test_body_start_accepts_voice_lines_with_definitions():
    lines = ["L:1/8", "K:C", "V:1 clef=treble", "abc|", "V:2 clef=bass", "ABC|"]
    assert standard_body_start(lines) == 2
    lines = ["L:1/8", "K:C", 'V:1 treble nm="A"', "V:2 bass", "V:1", "abc|", "V:2", "ABC|"]
    assert standard_body_start(lines) == 4


def test_original_key():
    assert original_key(clean_abc(RAW)) == "G"
    assert original_key("L:1/8\nK:none\nV:1\nV:1\nc|\n") == "C"
    assert original_key("L:1/8\nM:4/4\nV:1\nV:1\nc|\n") == "C"
    assert original_key("%%score 1\nL:1/8\nK:F#min\nV:1\n[V:1]c|\n") == "F#min"


def test_split_header_body_like_the_patchilizer():
    text = "%Baroque\n%Bach\n%Choral\n%end\nL:1/8\nK:C\nV:1 treble\n\n[r:0/1][V:1]c2|\n[r:1/0][V:1]d2|]\n"
    header, body = split_header_body(text)
    assert header == ["%Baroque", "%Bach", "%Choral", "%end", "L:1/8", "K:C", "V:1 treble"]
    assert body == ["[r:0/1][V:1]c2|", "[r:1/0][V:1]d2|]"]


def test_prompt_block_and_stripping():
    block = prompt_block("Romantic", "Dvořák, Antonín", "Chamber")
    assert block == "%Romantic\n%Dvorak, Antonin\n%Chamber\n%end\n"
    text = block + "%%score 1\nL:1/8\nK:C\n[r:0/0][V:1]c|\n"
    stripped = strip_prompt_lines(text)
    assert stripped == "%%score 1\nL:1/8\nK:C\n[r:0/0][V:1]c|\n"
    assert strip_stream_annotations(stripped).endswith("\n[V:1]c|\n")


def test_bar_count_and_voice_names():
    text = "L:1/8\nK:C\nV:1 treble\nV:2 bass\n[V:1]c|[V:2]C|\n[V:2]D|\n[V:1]e|][V:2]E|]\n"
    assert bar_count(text) == 3
    assert voice_names(text) == ["1", "2"]
    assert voice_names(clean_abc(RAW)) == ["1", "2"]
