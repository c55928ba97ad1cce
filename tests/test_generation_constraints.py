"""Bar-aligned decoding: which characters are removed, on real chorale text, and what stays the model's choice."""

from __future__ import annotations

from fractions import Fraction

import torch

from notagen.config import EOS_ID, VOCAB_SIZE
from notagen.generation.constraints import align_bar, header_timing, voice_target

HEADER = "%%score [ 1 | 2 | 3 | 4 ]\nL:1/8\nM:4/4\nK:G\nV:1 treble\nV:2 treble\nV:3 bass\nV:4 bass\n"
UNIT, METER, VOICES = Fraction(1, 8), "4/4", ("1", "2", "3", "4")


def flat() -> torch.Tensor:
    return torch.zeros(VOCAB_SIZE)


def allowed(line: str, chars: str, eos: bool = False) -> dict[str, bool]:
    """Which of `chars` (made the most likely ones; EOS too when asked) survive on `line`."""
    logits = flat()
    ids = [ord(c) for c in chars] + ([EOS_ID] if eos else [])
    logits[ids] = 1.0
    align_bar(logits, line, UNIT, METER, top_k=0, voices=VOICES)
    result = {c: bool(torch.isfinite(logits[ord(c)])) for c in chars}
    if eos:
        result["EOS"] = bool(torch.isfinite(logits[EOS_ID]))
    return result


def test_header_timing_reads_unit_meter_and_voices():
    assert header_timing(HEADER + "[r:0/3][V:1]G2|") == (UNIT, METER, VOICES)


def test_the_first_voice_is_free_and_later_voices_follow_it():
    assert voice_target("[r:0/3][V:1]G2 A2 B2", UNIT, METER) is None
    assert voice_target("[r:0/3][V:1]G2 A2 B2 c2|[V:2]D2 D", UNIT, METER) == (Fraction(1), Fraction(3, 8), "D2 D")


def test_a_short_voice_cannot_close_its_bar_and_a_long_note_is_refused():
    line = "[r:0/3][V:1]G2 A2 B2 c2|[V:2]D2 D2 D2 "  # 6 of 8 eighths
    ok = allowed(line, "|:dz/")
    assert not ok["|"] and not ok[":"]  # two eighths still missing
    assert ok["d"] and ok["z"]  # a note or a rest may follow (its length is checked next)
    ok = allowed(line + "d", "24\n", eos=True)
    assert ok["2"] and not ok["4"]  # d2 fits, d4 overshoots
    assert not ok["\n"] and not ok["EOS"]


def test_a_full_voice_may_end_its_unit_or_its_bar_but_not_add_notes():
    line = "[r:0/3][V:1]G2 A2 B2 c2|[V:2]D2 D2 D2 D2"
    ok = allowed(line, "|de^,", eos=True)
    assert ok["|"] and ok[","] and not ok["d"] and not ok["e"] and not ok["^"]
    assert ok["EOS"]  # units end before the barline that follows them


def test_an_overshooting_note_may_only_be_shortened():
    line = "[r:0/3][V:1]G2 A2 B2 c2|[V:2]D2 D2 D2 D2 D"  # 9 of 8 eighths
    ok = allowed(line, "/2 |")
    assert ok["/"] and not ok["2"] and not ok[" "] and not ok["|"]


def test_voices_are_declared_and_increasing():
    ok = allowed("[r:0/3][V:1]G8|[V:2]D8|[V:", "0123456789")
    assert {c for c, kept in ok.items() if kept} == {"3", "4"}


def test_open_text_and_a_written_barline_are_left_alone():
    for line in ('[r:0/3][V:1]G8|[V:2]D2 "Dm', "[r:0/3][V:1]G8|[V:2]D2 !fer", "[r:0/3][V:1]G8|[V:2]D2 [DF",
                 "[r:0/3][V:1]G8|[V:2]D8|"):
        logits = flat()
        assert align_bar(logits, line, UNIT, METER, top_k=0, voices=VOICES) == 0
        assert torch.isfinite(logits).all()


def test_when_nothing_likely_fits_the_model_keeps_its_choice():
    line = "[r:0/3][V:1]G2 A2 B2 c2|[V:2]D2 D2 D2 "
    logits = torch.full((VOCAB_SIZE,), float("-inf"))
    logits[ord("|")] = 0.0  # the only character the model gives any probability to is disallowed
    before = logits.clone()
    assert align_bar(logits, line, UNIT, METER, top_k=9, voices=VOICES) == 0
    assert torch.equal(logits, before)
