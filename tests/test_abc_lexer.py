"""The one ABC lexer: tokens of real xml2abc output, maximal munch, errors with positions."""

from fractions import Fraction

import pytest

from notagen.abc.lexer import Lexer, LexError, chord_members, length_value, note_parts, tokenize


def kinds(text: str) -> list[tuple[str, str]]:
    return [(token.kind, token.text) for token in tokenize(text)]


def test_tokens_of_a_quartet_bar():
    assert kinds("d(3(.e/4.f/4 d' z2|") == [
        ("note", "d"), ("tuplet", "(3"), ("slur_open", "("), ("short_decoration", "."), ("note", "e/4"),
        ("short_decoration", "."), ("note", "f/4"), ("space", " "), ("note", "d'"), ("space", " "),
        ("rest", "z2"), ("barline", "|")]


def test_brackets_start_chords_fields_barlines_and_voltas():
    assert kinds("[V:2][K:treble] [=DFA=B]2|1[Ee]/-[Ee]:|2") == [
        ("field", "[V:2]"), ("field", "[K:treble]"), ("space", " "), ("chord", "[=DFA=B]2"), ("barline", "|1"),
        ("chord", "[Ee]/"), ("tie", "-"), ("chord", "[Ee]"), ("barline", ":|2")]
    assert kinds("[|c4[1c4") == [("barline", "[|"), ("note", "c4"), ("barline", "[1"), ("note", "c4")]
    assert kinds('!fermata!G4 "^dolce" {/ga}f>e||') == [
        ("decoration", "!fermata!"), ("note", "G4"), ("space", " "), ("annotation", '"^dolce"'), ("space", " "),
        ("grace", "{/ga}"), ("note", "f"), ("broken", ">"), ("note", "e"), ("barline", "||")]


@pytest.mark.parametrize("text, position, message", [
    ("G2 - ,,, F", 5, "unexpected character ','"),      # stray octave marks
    ("c,", 1, "unexpected character ','"),               # commas belong after upper-case letters
    ('"^dolce', 0, "unfinished annotation"),
    ("[CE", 0, "unfinished bracket"),
    ("A2 % B", 3, "unexpected character '%'"),
])
def test_errors_name_the_character_and_position(text, position, message):
    with pytest.raises(LexError) as raised:
        tokenize(text)
    assert raised.value.position == position and message in str(raised.value)


def test_incremental_lexer_agrees_with_tokenize():
    text = "[CE]3/2 ^F2-F/ (3abc|"
    lexer, tokens = Lexer(), []
    for char in text:
        extends = lexer.extends(char)
        token = lexer.feed(char)
        assert extends == (token is None and len(lexer.buffer) > 1)
        if token:
            tokens.append(token)
    tokens.append(lexer.finish())
    assert tokens == tokenize(text)


def test_note_parts_and_lengths():
    note = note_parts("^c'3/2")
    assert (note.accidental, note.letter, note.octave, note.length, note.pitch_text) == ("^", "c", "'", "3/2", "^c'")
    assert [length_value(text) for text in ("", "2", "/", "//", "/4", "3/", "3/2", "3/4")] == [
        1, 2, Fraction(1, 2), Fraction(1, 4), Fraction(1, 4), Fraction(3, 2), Fraction(3, 2), Fraction(3, 4)]
    assert [(member.pitch_text, tied) for member, tied in chord_members("[C-_E]2")] == [("C", True), ("_E", False)]
