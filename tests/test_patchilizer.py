"""The patchilizer, rule by rule, on real pieces.

Fixtures (tests/fixtures/model_*.abc) are interleaved ABC made from real scores with abctoolkit's xml2abc and
rotate_abc: Bach chorales BWV 269 (with a fine-tuning prompt block) and BWV 40.3 from the music21 corpus, and two
single-voice tunes from Aird's Airs (music21 corpus): "The Ranting Highlandman" and "Todlen Hame".
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from notagen.abc.text import body_start
from notagen.config import BOS_ID, EOS_ID, PAD_ID
from notagen.errors import InputError
from notagen.patchilizer import (
    BAR_DELIMITERS,
    Patchilizer,
    add_stream_annotations,
    is_eos_patch,
    split_bars,
    split_lines,
    strip_stream_prefix,
)

FIXTURES = Path(__file__).parent / "fixtures"
PIECE_NAMES = ["model_bwv269.abc", "model_bwv40_3.abc", "model_aird_ranting_highlandman.abc",
               "model_aird_todlen_hame.abc"]
E = chr(EOS_ID)


def piece(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def as_text(patch: list[int]) -> str:
    """A patch as characters with its trailing pads removed (EOS stays visible as chr(2))."""
    while patch and patch[-1] == PAD_ID:
        patch = patch[:-1]
    return "".join(map(chr, patch))


def annotated(text: str) -> str:
    """The text the training encoding spells out: blank lines dropped, body lines prefixed with [r:i/j]."""
    lines = split_lines(text)
    start = body_start(lines)
    return "".join(lines[:start] + add_stream_annotations(lines[start:]))


PATCHILIZER = Patchilizer(patch_length=1024)


# -- lines and units ------------------------------------------------------------------------------------------


def test_metadata_lines_are_units_and_blank_lines_are_dropped() -> None:
    text = piece("model_bwv269.abc")
    metadata, body = PATCHILIZER.split_text(text)
    assert metadata == ["%Baroque\n", "%Bach, Johann Sebastian\n", "%Choral\n", "%end\n",
                        "%%score [ 1 | 2 | 3 | 4 ]\n", "L:1/8\n", "M:3/4\n", "K:G\n",
                        'V:1 treble nm="Soprano" snm="S."\n', 'V:2 treble nm="Alto" snm="A."\n',
                        'V:3 bass nm="Tenor" snm="T."\n', 'V:4 bass nm="Bass" snm="B."\n']
    assert len(body) == 24
    spaced = text.replace("\n", "\n\n", 5).replace("K:G\n", "K:G\n\n\n")
    assert spaced != text
    assert PATCHILIZER.encode_train(spaced) == PATCHILIZER.encode_train(text)
    patches = PATCHILIZER.encode_train(text)
    # each metadata line starts a fresh patch: "%Bach, Johann Sebastian\n" (24 chars) spans patches 2-3
    assert as_text(patches[2]) == "%Bach, Johann Se"
    assert as_text(patches[3]) == "bastian\n" + E
    assert as_text(patches[4]) == "%Choral\n" + E


def test_units_become_16_char_patches_ending_with_eos() -> None:
    unit = "%Bach, Johann Sebastian\n"
    patches = PATCHILIZER.unit_to_patches(unit)
    assert len(patches) == 2 and all(len(p) == 16 for p in patches)
    assert patches[0] == [ord(c) for c in unit[:16]]
    assert patches[1] == [ord(c) for c in unit[16:]] + [EOS_ID] + [PAD_ID] * 7
    # a line of length L gives ceil((L + 1) / 16) patches unless 16 divides L
    for name in PIECE_NAMES:
        metadata, body = PATCHILIZER.split_text(piece(name))
        for unit in metadata + [u for line in body for u in line]:
            expected = len(unit) // 16 if len(unit) % 16 == 0 else -(-(len(unit) + 1) // 16)
            assert len(PATCHILIZER.unit_to_patches(unit)) == expected, unit


def test_exact_multiple_of_16_gets_no_eos() -> None:
    """The official quirk: a unit of 16·k characters has no EOS; the next unit starts in the next patch."""
    text = piece("model_aird_ranting_highlandman.abc")
    patches = PATCHILIZER.encode_train(text)
    texts = [as_text(p) for p in patches]
    index = texts.index("[r:9/8][V:1]Bc|\n")  # a real 16-character line of the tune
    assert patches[index] == [ord(c) for c in "[r:9/8][V:1]Bc|\n"]
    assert EOS_ID not in patches[index]
    assert texts[index + 1].startswith("[r:10/7][V:1]")
    # and a 32-character bar of BWV 40.3 gives exactly two full patches
    unit = "[r:2/9][V:1]B2 A2 !fermata!G2 d2"
    assert len(unit) == 32
    assert PATCHILIZER.unit_to_patches(unit) == [[ord(c) for c in unit[:16]], [ord(c) for c in unit[16:]]]


def test_bos_and_eos_patches() -> None:
    patches = PATCHILIZER.encode_train(piece("model_bwv40_3.abc"))
    assert patches[0] == [BOS_ID] * 15 + [EOS_ID]
    assert patches[-1] == [BOS_ID] + [EOS_ID] * 15
    assert is_eos_patch(patches[-1]) and not is_eos_patch(patches[0])
    assert sum(map(is_eos_patch, patches)) == 1
    without = PATCHILIZER.encode_train(piece("model_bwv40_3.abc"), add_special_patches=False)
    assert without == patches[1:-1]


# -- body -----------------------------------------------------------------------------------------------------


def test_bar_split_glues_each_barline_to_the_following_bar() -> None:
    assert split_bars("[V:1]!fermata!G4:|[V:2]!fermata!D4:|[V:3]!fermata!B,4:|[V:4]!fermata!G,,4:|\n") == [
        "[V:1]!fermata!G4", ":|[V:2]!fermata!D4", ":|[V:3]!fermata!B,4", ":|[V:4]!fermata!G,,4:|\n"]
    assert split_bars("[V:1]!fermata!G4|][V:2]!fermata!D4|][V:3]!fermata!B,4|][V:4]!fermata!G,,4|]\n") == [
        "[V:1]!fermata!G4", "|][V:2]!fermata!D4", "|][V:3]!fermata!B,4", "|][V:4]!fermata!G,,4|]\n"]
    # a line starting with a repeat (Todlen Hame): the voice tag alone, then the bar with its barline
    assert split_bars("[r:10/3][V:1]|:f>ed B>cd|\n") == ["[r:10/3][V:1]", "|:f>ed B>cd|\n"]
    # a line whose only barline is final: one unit with the barline and newline merged
    assert split_bars("[V:1]d2B2 B2::\n") == ["[V:1]d2B2 B2::\n"]
    assert split_bars("[V:1]A>Bd d2||\n") == ["[V:1]A>Bd d2||\n"]
    # a barline-free line (an unfinished generated line) is one unit
    assert split_bars("[V:1]AB") == ["[V:1]AB"]


@pytest.mark.parametrize(("line", "delimiter"), [
    ("[V:1]a|:b|[V:2]c|\n", "|:"), ("[V:1]a::b|[V:2]c|\n", "::"), ("[V:1]a:|b|[V:2]c|\n", ":|"),
    ("[V:1]a[|b|[V:2]c|\n", "[|"), ("[V:1]a||b|[V:2]c|\n", "||"), ("[V:1]a|]b|[V:2]c|\n", "|]"),
])
def test_bar_split_prefers_two_character_barlines(line: str, delimiter: str) -> None:
    assert split_bars(line) == ["[V:1]a", delimiter + "b", "|[V:2]c|\n"]


def test_bar_split_is_lossless_on_real_lines() -> None:
    for name in PIECE_NAMES:
        lines = split_lines(piece(name))
        for line in lines[body_start(lines):]:
            units = split_bars(line)
            assert "".join(units) == line
            assert units[-1].endswith("\n") and units[-1].rstrip("\n") not in BAR_DELIMITERS  # final barline merged


def test_stream_annotations_count_lines_done_and_to_come() -> None:
    text = piece("model_bwv269.abc")
    _, body = PATCHILIZER.split_text(text)
    n = len(body)
    for i, line in enumerate(body):
        assert line[0].startswith(f"[r:{i}/{n - 1 - i}][V:1]")
    assert PATCHILIZER.decode(PATCHILIZER.encode_train(text)) == annotated(text)
    plain = Patchilizer(stream=False).split_text(text)[1]
    assert plain[0][0].startswith("[V:1]")
    assert strip_stream_prefix("[r:12/3][V:1]ab|\n") == "[V:1]ab|\n"


def test_already_annotated_text_is_not_annotated_twice() -> None:
    text = piece("model_bwv40_3.abc")
    once = PATCHILIZER.decode(PATCHILIZER.encode_train(text))
    assert PATCHILIZER.encode_train(once) == PATCHILIZER.encode_train(text)
    assert "[r:0/11][r:" not in PATCHILIZER.decode(PATCHILIZER.encode_train(once))


def test_worked_example_gives_exactly_its_25_patches() -> None:
    """The toy piece transposed to C with the prompt Classical / Beethoven / Keyboard."""
    text = ('%Classical\n%Beethoven, Ludwig van\n%Keyboard\n%%score 1 { 2 | 3 }\nL:1/8\nM:3/4\nK:C\n'
            'V:1 treble nm="Violin"\nV:2 treble nm="Piano"\nV:3 bass \n'
            '[V:1]"^dolce" c2 d e f2|[V:2]E6|[V:3]C,6|\n[V:2]F2 G2 A2|\n[V:1]g6|][V:2]E6|][V:3]C,6|]\n')
    patches = PATCHILIZER.encode_train(text)
    assert len(patches) == 25
    texts = [as_text(p) for p in patches]
    expected_prefix = [chr(BOS_ID) * 15 + E, "%Classical\n" + E, "%Beethoven, Ludw", "ig van\n" + E,
                       "%Keyboard\n" + E, "%%score 1 { 2 | ", "3 }\n" + E, "L:1/8\n" + E, "M:3/4\n" + E,
                       "K:C\n" + E, 'V:1 treble nm="V', 'iolin"\n' + E]
    assert texts[:12] == expected_prefix
    body = texts.index('[r:0/2][V:1]"^do')
    assert texts[body:body + 6] == ['[r:0/2][V:1]"^do', 'lce" c2 d e f2' + E, "|[V:2]E6" + E,
                                    "|[V:3]C,6|\n" + E, "[r:1/1][V:2]F2 G", "2 A2|\n" + E]
    assert texts[-1] == chr(BOS_ID) + E * 15


def test_non_ascii_is_refused() -> None:
    text = piece("model_bwv269.abc").replace("%Bach, Johann Sebastian", "%Bach, Johann Sébastian")
    with pytest.raises(InputError, match="not ASCII") as error:
        PATCHILIZER.encode_train(text)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError):
        PATCHILIZER.encode_generate("[r:0/0][V:1]C2 “D”|\n")


# -- long pieces ----------------------------------------------------------------------------------------------


def first_body_line(patches: list[list[int]]) -> int | None:
    match = re.search(r"\[r:(\d+)/(\d+)\]", PATCHILIZER.decode(patches))
    return int(match.group(1)) if match else None


def test_long_pieces_are_cut_at_line_starts_keeping_metadata() -> None:
    text = piece("model_bwv269.abc")
    limit = 60
    patchilizer = Patchilizer(patch_length=limit)
    full = patchilizer.encode_train(text, cut=False)
    n_lines = len(patchilizer.split_text(text)[1])
    metadata_patches = full[:full.index(next(p for p in full if as_text(p).startswith("[r:0/")))]
    assert len(full) > limit and len(metadata_patches) < limit
    kinds: dict[str, set[int]] = {"head": set(), "tail": set(), "middle": set()}
    rng = random.Random(0)
    counts = {"head": 0, "tail": 0, "middle": 0}
    for _ in range(150):
        patches = patchilizer.encode_train(text, rng=rng)
        assert len(patches) <= limit
        assert patches[:len(metadata_patches)] == metadata_patches  # metadata always kept
        start = first_body_line(patches)
        body = PATCHILIZER.decode(patches[len(metadata_patches):])
        # kept lines keep their original numbers and follow each other
        numbers = [(int(i), int(j)) for i, j in re.findall(r"\[r:(\d+)/(\d+)\]", body)]
        assert all(i + j == n_lines - 1 for i, j in numbers)
        assert [i for i, _ in numbers] == list(range(start, start + len(numbers)))
        if is_eos_patch(patches[-1]):
            kinds["tail"].add(start)
            counts["tail"] += 1
            assert patches == (metadata_patches + full[full.index(next(
                p for p in full if as_text(p).startswith(f"[r:{start}/"))):])
        else:
            assert len(patches) == limit
            kinds["head" if start == 0 else "middle"].add(start)
            counts["head" if start == 0 else "middle"] += 1
    assert kinds["head"] == {0}
    (tail_start,) = kinds["tail"]  # the tail is always the smallest cut that fits
    line_starts = [k for k, p in enumerate(full) if as_text(p).startswith("[r:")]
    assert len(metadata_patches) + len(full) - line_starts[tail_start] <= limit
    assert len(metadata_patches) + len(full) - line_starts[tail_start - 1] > limit
    assert kinds["middle"] and all(0 < k < tail_start for k in kinds["middle"])
    assert all(35 < count < 65 for count in counts.values()), counts  # the three crops are equally likely


def test_a_cut_of_one_line_offers_only_head_and_tail() -> None:
    text = piece("model_aird_todlen_hame.abc")
    full = PATCHILIZER.encode_train(text, cut=False)
    patchilizer = Patchilizer(patch_length=len(full) - 1)  # dropping the first body line is enough
    rng = random.Random(1)
    starts = [first_body_line(patchilizer.encode_train(text, rng=rng)) for _ in range(400)]
    assert set(starts) == {0, 1}
    assert 0.4 < starts.count(0) / len(starts) < 0.6  # head and tail equally likely, no third option


def test_pieces_that_fit_are_not_cut() -> None:
    text = piece("model_bwv40_3.abc")
    full = PATCHILIZER.encode_train(text, cut=False)
    assert Patchilizer(patch_length=len(full)).encode_train(text, rng=random.Random(0)) == full


# -- generation and decoding ----------------------------------------------------------------------------------


def test_generate_encoding_keeps_annotations_and_leaves_the_last_chunk_open() -> None:
    text = annotated(piece("model_bwv269.abc"))
    patches = PATCHILIZER.encode_generate(text)
    train = PATCHILIZER.encode_train(piece("model_bwv269.abc"))
    assert patches[0] == PATCHILIZER.bos_patch
    assert not is_eos_patch(patches[-1])  # only the BOS patch is added
    # identical to the training encoding except the last unit "|][V:4]!fermata!G,,4|]\n" (23 chars): no EOS
    assert patches[:-2] == train[:-3]
    assert patches[-2] == [ord(c) for c in "|][V:4]!fermata!"]
    assert patches[-1] == [ord(c) for c in "G,,4|]\n"]  # unpadded: a forced prefix of the next patch
    assert PATCHILIZER.decode(patches) == text


def test_generate_encoding_of_an_unfinished_line_has_no_newline() -> None:
    text = annotated(piece("model_aird_ranting_highlandman.abc"))
    unfinished = text + "[r:18/0][V:1]B2"
    patches = PATCHILIZER.encode_generate(unfinished)
    assert as_text(patches[-1]) == "[r:18/0][V:1]B2"
    assert len(patches[-1]) == 15
    assert PATCHILIZER.decode(patches) == unfinished
    # a unit that ends exactly on a patch boundary leaves no open chunk
    assert PATCHILIZER.encode_generate(text + "[r:18/0][V:1]B2|")[-1] == [ord(c) for c in "[r:18/0][V:1]B2|"]


def test_generate_encoding_is_truncated_to_the_context() -> None:
    text = annotated(piece("model_bwv269.abc"))
    patches = Patchilizer(patch_length=32).encode_generate(text)
    assert len(patches) == 32
    assert patches == PATCHILIZER.encode_generate(text)[:32]


@pytest.mark.parametrize("name", PIECE_NAMES)
def test_decode_inverts_encode(name: str) -> None:
    text = piece(name)
    assert PATCHILIZER.decode(PATCHILIZER.encode_train(text, cut=False)) == annotated(text)
    assert PATCHILIZER.decode(PATCHILIZER.encode_generate(annotated(text))) == annotated(text)
    stripped = "".join(strip_stream_prefix(line) for line in split_lines(annotated(text)))
    assert stripped == "".join(split_lines(text))


def test_decode_stops_at_eos_and_drops_special_ids() -> None:
    assert PATCHILIZER.patch_to_text([ord("a"), ord("b"), EOS_ID, ord("c")] + [PAD_ID] * 12) == "ab"
    assert PATCHILIZER.patch_to_text([BOS_ID, ord("x"), PAD_ID, ord("y")] + [PAD_ID] * 12) == "xy"
    assert PATCHILIZER.decode([PATCHILIZER.bos_patch, PATCHILIZER.eos_patch]) == ""
