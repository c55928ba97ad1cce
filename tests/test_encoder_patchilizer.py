"""M3 patchilizer: the rules of CLaMP 2's M3 patching (github.com/sanderwood/clamp2) on hand-written interleaved ABC."""

from __future__ import annotations

import random

from notagen.abc.text import strip_prompt_lines
from notagen.encoder.patchilizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    M3Patchilizer,
    split_bars,
)

PIECE = (
    "%Baroque\n%Bach, Johann Sebastian\n%Keyboard\n%end\n"
    "%%score { 1 | 2 }\nL:1/8\nM:4/4\nK:G\nV:1 treble\nV:2 bass\n"
    "[V:1]|:GABc d2 e2|[V:2]G,4 D,4|\n"
    "[V:1]d2 B2 G4:|[V:2]G,8:|\n"
)


def test_split_bars_reference_rules():
    assert split_bars("|:GA Bc|de fg:|\n") == ["|:GA Bc|", "de fg:|"]
    assert split_bars("[V:1]ab|[V:2]cd|\n") == ["[V:1]ab|", "[V:2]cd|"]
    assert split_bars("abc d\n") == []  # no barline: the reference drops the text
    assert split_bars("ab|cd\n") == ["ab|"]  # text after the last barline is dropped too
    assert split_bars("a||b|]\n") == ["a||", "b|]"]


def test_abc_mode_patches():
    texts = M3Patchilizer().split_patches(strip_prompt_lines(PIECE))
    assert texts[:6] == ["%%score { 1 | 2 }\n", "L:1/8\n", "M:4/4\n", "K:G\n", "V:1 treble\n", "V:2 bass\n"]
    # A barline after an inline voice field closes a "bar" of its own, as in the reference.
    assert texts[6:] == ["[V:1]|:", "GABc d2 e2|", "[V:2]G,4 D,4|\n", "[V:1]d2 B2 G4:|", "[V:2]G,8:|\n"]


def test_patch_ids_specials_and_truncation():
    patchilizer = M3Patchilizer(patch_size=8, patch_length=4)
    patches = patchilizer.encode("K:C\nabcdefghij|\n", add_special_patches=True)
    assert patches[0] == [BOS_ID] * 8
    assert patches[-1] == [BOS_ID] + [EOS_ID] * 7
    assert patches[1] == [BOS_ID, ord("K"), ord(":"), ord("C"), ord("\n"), EOS_ID, PAD_ID, PAD_ID]
    assert patches[2] == [BOS_ID] + [ord(c) for c in "abcdefg"]  # cut at 8: no eos
    assert patchilizer.decode(patches[1:2]) == "K:C\n"
    long = "K:C\n" + "a|" * 10 + "\n"
    assert len(patchilizer.encode(long, truncate=True)) == 4
    windows = {tuple(map(tuple, patchilizer.encode(long, truncate=True, rng=random.Random(s)))) for s in range(20)}
    assert len(windows) > 2  # head, tail and middles


def test_unicode_is_transliterated_and_mtf_merges():
    patches = M3Patchilizer().encode("T:Café\n")
    assert max(max(p) for p in patches) < 128
    mtf = "ticks_per_beat 480\nnote_on 0 60 64\nnote_on 0 64 64\ncontrol_change 0 7 100\n"
    texts = M3Patchilizer().split_patches(mtf)
    assert texts == ["ticks_per_beat 480\n", "note_on 0 60 64\t0 64 64\n", "control_change 0 7 100\n"]


def test_strip_prompt_lines_keeps_directives():
    assert strip_prompt_lines("%Romantic\n%%score 1\n%end\nK:C\n") == "%%score 1\nK:C\n"
