"""`notagen generate` / `notagen prompts` end to end with tiny checkpoints; prompts; post-processing."""

import json
import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from notagen.checkpoint import save_checkpoint
from notagen.cli import main
from notagen.config import BOS_ID, EOS_ID, VOCAB_SIZE, ModelConfig
from notagen.errors import CheckpointError, PromptError
from notagen.generation.cli import generate_command
from notagen.generation.continuation import continuation_text
from notagen.generation.postprocess import finish_text
from notagen.model import NotaGenModel
from notagen.prompt import Prompt, prompt_context, resolve_prompt
from notagen.render import find_soundfont

REGISTRY = [
    {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral", "count": 5},
    {"period": "Romantic", "composer": "Chopin, Frederic", "instrumentation": "Keyboard", "count": 3},
    {"period": "Romantic", "composer": "Schumann, Robert", "instrumentation": "Keyboard", "count": 2},
]
# A two-bar violin/cello piece in the model's format; "0/" after the first "[r:" is forced by the engine.
SCRIPT_UNITS = ["%end\n", "L:1/4\n", "M:4/4\n", "K:C\n", 'V:1 treble nm="Violin"\n', 'V:2 bass nm="Cello"\n',
                "[r:1][V:1]c d e f", "|[V:2]C,D,E,F,|\n", "[r:1/0][V:1]g4", "|][V:2]C,4|]\n"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = NotaGenModel(ModelConfig.preset("tiny", patch_length=32))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, prompts=REGISTRY)


class ScriptedLogits:
    def __init__(self, script: list[int]) -> None:
        self.script, self.calls = script, 0

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(hidden.shape[0], VOCAB_SIZE, dtype=hidden.dtype)
        logits[:, self.script[min(self.calls, len(self.script) - 1)]] = 50.0
        self.calls += 1
        return logits


def test_resolve_prompt_against_the_registry():
    assert resolve_prompt(None, None, None, REGISTRY) is None
    assert resolve_prompt("baroque", "bach,  johann sebastian", "CHORAL", REGISTRY) == Prompt.of(REGISTRY[0])
    assert resolve_prompt(None, "Chopin, Frederic", None, REGISTRY) == Prompt.of(REGISTRY[1])  # unique partial
    with pytest.raises(PromptError, match="ambiguous"):
        resolve_prompt("Romantic", None, None, REGISTRY)
    with pytest.raises(PromptError, match=re.escape("closest: Romantic | Chopin, Frederic | Keyboard")) as error:
        resolve_prompt("Romantic", "Chopin", "Keyboard", REGISTRY)
    assert "\n" not in str(error.value)
    with pytest.raises(PromptError, match="no prompt registry"):
        resolve_prompt("Romantic", None, None, [])
    assert resolve_prompt("Classical", "Mozart, Wolfgang Amadeus", "Keyboard", []).period == "Classical"
    assert prompt_context(Prompt.of(REGISTRY[0])) == "%Baroque\n%Bach, Johann Sebastian\n%Choral\n"
    assert prompt_context(None) == ""


def test_prompt_has_one_parse_and_one_format():
    prompt = Prompt.parse("  Romantic |Dvořák,  Antonín| Chamber ")
    assert prompt == Prompt("Romantic", "Dvořák, Antonín", "Chamber") == Prompt.of(prompt.to_dict())
    assert str(prompt) == "Romantic | Dvořák, Antonín | Chamber" and Prompt.parse(str(prompt)) == prompt
    assert prompt.block() == "%Romantic\n%Dvorak, Antonin\n%Chamber\n%end\n"  # ASCII for the model
    assert Prompt.from_text(prompt.block() + "L:1/8\n") == Prompt("Romantic", "Dvorak, Antonin", "Chamber")
    assert Prompt.from_text("%%score 1\nL:1/8\n") is None and Prompt.of({"period": "Romantic"}) is None
    assert prompt.short() == "Dvořák / Chamber"
    for bad in ("Romantic | Chamber", "Romantic | | Chamber", "a | b | c | d"):
        with pytest.raises(PromptError, match=re.escape("not 'period | composer | instrumentation'")):
            Prompt.parse(bad)


def test_generate_end_to_end_reports_invalid_random_pieces(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--checkpoint", str(tiny_checkpoint), "--period", "Romantic", "--composer",
                 "Chopin, Frederic", "--instrumentation", "Keyboard", "-n", "2", "--batch-size", "2", "--seed", "5",
                 "--retries", "1", "--device", "cpu", "--output", str(out), "--no-strict"])
    assert code == 0
    run = json.loads((out / "manifest.json").read_text())
    assert len(run["pieces"]) == 2
    for item in run["pieces"]:
        manifest = json.loads((out / item["name"] / f"{item['name']}.json").read_text())
        assert manifest["prompt"]["composer"] == "Chopin, Frederic"
        assert manifest["valid"] is False and manifest["error"]  # random weights: honest failure
        assert len(manifest["attempts"]) == 2 and manifest["retries"] == 1
        assert manifest["attempts"][1]["seed"] == manifest["attempts"][0]["seed"] + 2  # next unused seed
        assert manifest["sampling"] == {"temperature": 1.2, "top_k": 9, "top_p": 0.9, "order": "reference",
                                        "strict": False}
        assert manifest["model"]["config"]["patch_length"] == 32
        raw = (out / item["name"] / f"{item['name']}.raw.abc").read_text()
        assert raw.startswith("%Romantic\n%Chopin, Frederic\n%Keyboard\n")
        assert "musicxml" in manifest["skipped"]
    assert "0/2 valid" in capsys.readouterr().out


def test_generate_writes_every_format_for_a_valid_piece(tiny_checkpoint, tmp_path, monkeypatch):
    from notagen import weights

    real_open = weights.open_checkpoint
    script = [c for unit in SCRIPT_UNITS for c in [ord(ch) for ch in unit] + [EOS_ID]] + [BOS_ID, EOS_ID]

    def scripted_open(checkpoint, device="cpu", precision="fp32"):
        loaded = real_open(checkpoint, device, precision)
        loaded.model.char_level_decoder.logits = ScriptedLogits(script)
        return loaded

    monkeypatch.setattr(weights, "open_checkpoint", scripted_open)
    out = tmp_path / "out"
    generate_command(period="Baroque", composer="Bach, Johann Sebastian", instrumentation="Choral",
                     checkpoint=tiny_checkpoint, output=out, device="cpu", seed=3)
    folder = out / "piece-001-seed3"
    manifest = json.loads((folder / "piece-001-seed3.json").read_text())
    assert manifest["valid"] is True and manifest["error"] is None, manifest["error"]
    assert manifest["stop_reason"] == "eos" and manifest["bars"] == 2 and manifest["retries"] == 0
    assert manifest["validity"]["bars"] == 2 and manifest["validity"]["voices"] == 2
    names = {p.name for p in folder.iterdir()}
    for suffix in (".raw.abc", ".interleaved.abc", ".abc", ".musicxml", ".mid", ".svg", ".png", ".json"):
        assert f"piece-001-seed3{suffix}" in names
    assert manifest["midi_programs"] == {"P1": 40, "P2": 42}  # Violin, Cello
    raw = (folder / "piece-001-seed3.raw.abc").read_text()
    assert "[r:0/1][V:1]c d e f|[V:2]C,D,E,F,|\n" in raw
    interleaved = (folder / "piece-001-seed3.interleaved.abc").read_text()
    assert interleaved.startswith("X:1\n") and "[r:" not in interleaved and "%Baroque" not in interleaved
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "piece-001-seed3"]  # no .partial folder
    assert manifest["files"]["midi"] == ["piece-001-seed3/piece-001-seed3.mid"]
    if shutil.which("fluidsynth") is None or find_soundfont() is None:  # audio tools absent: a reason, no file
        assert "fluidsynth" in manifest["skipped"]["wav"] or "soundfont" in manifest["skipped"]["wav"]
        assert "piece-001-seed3.wav" not in names
    else:  # present: the WAV must be there and hold sound
        assert "wav" not in manifest["skipped"] and manifest["files"]["wav"] == ["piece-001-seed3/piece-001-seed3.wav"]
        with wave.open(str(folder / "piece-001-seed3.wav")) as wav:
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        assert frames.size and np.abs(frames).max() > 1000


def test_errors_are_one_line(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("notagen.weights.default_checkpoint_path", lambda: None)
    with pytest.raises(CheckpointError, match="no model: pass --checkpoint"):
        generate_command(output=tmp_path)
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--composer", "Chopn", "--output",
                 str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("notagen: error: unknown prompt") and err.count("\n") == 1
    assert main(["prompts", "--checkpoint", str(tiny_checkpoint)]) == 0
    listing = capsys.readouterr().out
    assert "Chopin, Frederic" in listing and "Schumann, Robert" in listing


def test_continuation_numbers_the_given_lines(tmp_path):
    from music21 import corpus

    text = continuation_text(Path(corpus.getWork("bach/bwv66.6")))
    lines = [line for line in text.split("\n") if line.startswith("[r:")]
    k = len(lines)
    assert k >= 9
    assert lines[0].startswith(f"[r:0/{2 * k - 1}][V:1]") and lines[-1].startswith(f"[r:{k - 1}/{k}]")
    text = continuation_text(Path(corpus.getWork("bach/bwv66.6")), remaining=4)
    assert [line for line in text.split("\n") if line.startswith("[r:")][-1].startswith(f"[r:{k - 1}/4]")
    assert finish_text(text).valid  # the given beginning itself is valid music


def test_finished_files_say_that_an_accidental_holds_in_its_octave():
    """abc2midi carries `^e` to the E an octave below unless told otherwise, and then finds no note for this tie
    (found by random-weight pieces); the files we write say the ABC 2.1 rule that abc2xml and our reader use."""
    from notagen.abc.text import ACCIDENTALS_DIRECTIVE
    from notagen.dpo.loop import scoring_text
    from notagen.judges import abc2midi_verdict
    text = "L:1/8\nM:2/2\nK:Cdor\nV:1\n[r:0/0][V:1]C2 [E^e]-[E^e] G4|]\n"
    finished = finish_text(text)
    assert finished.valid and ACCIDENTALS_DIRECTIVE in finished.interleaved and ACCIDENTALS_DIRECTIVE in \
        finished.standard
    assert abc2midi_verdict(finished.interleaved).accepted
    assert not abc2midi_verdict(finished.interleaved.replace(ACCIDENTALS_DIRECTIVE + "\n", "")).accepted
    assert ACCIDENTALS_DIRECTIVE not in scoring_text(finished.interleaved, text)   # references have none


def test_finish_text_restores_rests_and_reports_problems():
    reduced = ("%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\n%%score { 1 | 2 }\nL:1/4\nM:4/4\nK:C\n"
               "V:1 treble\nV:2 bass\n[r:0/1][V:1]cdef|[V:2]C,D,E,F,|\n[r:1/0][V:1]g4|]\n")
    finished = finish_text(reduced)
    assert finished.valid and finished.error is None
    assert "[V:2]z4|]" in finished.interleaved or "[V:2]x4|]" in finished.interleaved
    assert finished.musicxml and "<score-partwise" in finished.musicxml and finished.standard
    broken = reduced.replace("g4|]", "g3|]").replace("C,D,E,F,|", "C,D,E,|")
    report = finish_text(broken)
    assert not report.valid and report.error
    assert finish_text("%Baroque\nrandom garbage\n").error.startswith("no music")
    # noise after real music: the converters read voiceless lines as rests, the check must not call it valid
    noisy = finish_text(reduced + "[r:2/0]x\x07y|z{\n")
    assert not noisy.valid and "no voice" in noisy.error and "non-printable" in noisy.error


def test_continuation_from_midi(tmp_path):
    from music21 import corpus

    from notagen.convert import score_to_musicxml
    from notagen.render import render_midi

    midi = tmp_path / "chorale.mid"
    midi.write_bytes(render_midi(score_to_musicxml(corpus.getWork("bach/bwv66.6"))))
    text = continuation_text(midi, remaining=2)
    lines = [line for line in text.split("\n") if line.startswith("[r:")]
    assert len(lines) >= 9 and lines[0].startswith("[r:0/") and lines[-1].startswith(f"[r:{len(lines) - 1}/2]")
    assert "K:" in text and text.count("V:") >= 4
