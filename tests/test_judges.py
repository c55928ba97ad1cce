"""The outside judges, and the bundled model's pieces before them: abc2midi, abcm2ps, music21 and mido must all
accept what `notagen generate` writes, for every bundled prompt (fixed seeds, first attempts only)."""

from __future__ import annotations

import shutil

import pytest

from notagen.checkpoint import default_checkpoint_path, load_checkpoint
from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
from notagen.generation.postprocess import finish_text
from notagen.judges import abc2midi_verdict, abcm2ps_verdict, judge_abc, midi_verdict, music21_verdict
from notagen.prompt import Prompt, prompt_context
from notagen.render import render_midi

needs_programs = pytest.mark.skipif(not (shutil.which("abc2midi") and shutil.which("abcm2ps")),
                                    reason="abcmidi/abcm2ps not installed (scripts/setup.sh installs them)")

GOOD = "X:1\nL:1/8\nM:3/4\nK:G\nV:1\n[V:1]G2 A2 B2|c4 B2|A6|]\n"


@needs_programs
def test_programs_accept_good_abc_and_object_to_bad():
    assert abc2midi_verdict(GOOD).accepted and abcm2ps_verdict(GOOD).accepted
    long_bar = GOOD.replace("c4 B2", "c4 B2 A2")
    verdict = abc2midi_verdict(long_bar)
    assert not verdict.accepted and "time units" in verdict.problems[0]
    assert not abcm2ps_verdict(GOOD.replace("c4 B2", "c5 B")).accepted           # "Note too much dotted"
    assert not abc2midi_verdict(GOOD.replace("c4 B2", ".c2- c2 B2")).accepted    # a staccato note cannot be tied


def test_music21_and_mido_judges():
    from notagen.convert import abc_to_musicxml

    xml = abc_to_musicxml(GOOD)
    assert music21_verdict(xml).accepted
    assert not music21_verdict(xml.replace("<beats>3</beats>", "<beats>4</beats>")).accepted
    assert midi_verdict(render_midi(xml)).accepted
    assert not midi_verdict(b"MThd not really").accepted


@needs_programs
def test_every_bundled_prompt_writes_pieces_every_judge_accepts():
    loaded = load_checkpoint(default_checkpoint_path())
    engine = GenerationEngine(loaded.model)
    requests = [PieceRequest(prompt_context(Prompt.of(prompt)), seed=7 + i)
                for prompt in loaded.prompts for i in range(2)]
    pieces = engine.generate(requests, SamplingSettings(), GenerationLimits(max_bars=12), batch_size=4)
    for piece in pieces:
        finished = finish_text(piece.text)
        assert piece.stop_reason == "eos" and piece.strict_off is None
        assert finished.valid, finished.error
        verdict = judge_abc(finished.interleaved, finished.musicxml, render_midi(finished.musicxml))
        assert verdict.accepted, verdict.problems()
