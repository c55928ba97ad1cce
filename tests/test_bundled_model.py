"""The bundled default model (notagen/models/notagen-mini): present, small, loadable, and usable with no flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from notagen.checkpoint import DEFAULT_MODEL_DIR, default_checkpoint_path, load_checkpoint
from notagen.cli import main

MAX_BYTES = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def bundled():
    path = default_checkpoint_path()
    assert path == DEFAULT_MODEL_DIR, "the bundled model is missing from notagen/models/notagen-mini"
    return load_checkpoint(path)


def test_files_size_and_registry(bundled):
    files = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "MODEL_CARD.md"} <= set(files)
    assert sum(files.values()) <= MAX_BYTES
    # Every registry prompt was fine-tuned on enough pieces to be more than a copy of one of them.
    assert bundled.prompts and all(p["count"] >= 5 for p in bundled.prompts)
    assert {p["composer"] for p in bundled.prompts} >= {"Bach, Johann Sebastian"}
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text(encoding="utf-8")
    for prompt in bundled.prompts:  # the card's evaluation covers every prompt the model offers
        assert prompt["composer"] in card
    assert all(torch.isfinite(t).all() for t in bundled.model.state_dict().values())


def test_generate_with_no_checkpoint_uses_the_bundled_model(tmp_path: Path):
    args = ["generate", "--period", "Baroque", "--composer", "Bach, Johann Sebastian", "--instrumentation",
            "Choral", "-n", "1", "--seed", "3", "--max-bars", "3", "--formats", "abc", "--retries", "0",
            "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert summary["model"]["source"] == str(DEFAULT_MODEL_DIR)
    name = summary["pieces"][0]["name"]
    raw = (tmp_path / "a" / name / f"{name}.raw.abc").read_text()
    assert raw.startswith("%Baroque\n%Bach, Johann Sebastian\n%Choral\n%end\n")
    assert "V:1" in raw and "[V:" in raw  # a score header and interleaved bars, not noise
    assert raw == (tmp_path / "b" / name / f"{name}.raw.abc").read_text()  # the same seed, the same piece


def test_an_unknown_prompt_names_the_registry(capsys):
    assert main(["generate", "--period", "Baroque", "--composer", "Bach, J. S.", "--instrumentation", "Choral",
                 "--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Bach, Johann Sebastian" in err
