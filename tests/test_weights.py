"""Official weights by name (offline, from a Hugging Face cache built here), converted copies, precisions.

The hub cache is laid out as huggingface_hub lays it out (`models--OWNER--REPO/{refs/main, snapshots/<commit>/…}`)
and holds an official-layout `.pth` with random tiny weights under the NotaGen-X file name. conftest sets
HF_HUB_OFFLINE=1 and points HF_HUB_CACHE and NOTAGEN_CACHE_DIR at temporary folders: nothing here can reach the
network or the user's caches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from notagen.checkpoint import export_official, load_checkpoint, save_checkpoint
from notagen.cli import main
from notagen.config import ModelConfig
from notagen.errors import CheckpointError, ConfigError, PromptError
from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
from notagen.generation.reference import generate_plain
from notagen.hub import OFFICIAL, OFFICIAL_REPO, HubFile, official_prompts, parse_name
from notagen.model import NotaGenModel
from notagen.precision import model_precision, weight_bytes
from notagen.prompt import resolve_prompt
from notagen.weights import cache_dir, open_checkpoint, prompts_of

X_FILE = OFFICIAL["notagen-x"].filename
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = ModelConfig(patch_length=64, patch_layers=2, char_layers=2, hidden_size=128, dropout=0.0)
GREEDY = SamplingSettings(top_k=1)
PROMPT = "%Romantic\n%Chopin, Frederic\n%Keyboard\n"


@pytest.fixture(scope="module")
def model() -> NotaGenModel:
    torch.manual_seed(1)
    return NotaGenModel(CONFIG).eval()


@pytest.fixture()
def hub(tmp_path, monkeypatch, model) -> Path:
    """A Hugging Face cache holding the NotaGen-X file name with random weights; fresh caches per test."""
    cache = tmp_path / "hub"
    repo = cache / f"models--{OFFICIAL_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    export_official(model, snapshot / X_FILE)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NOTAGEN_CACHE_DIR", str(tmp_path / "notagen-cache"))
    return snapshot / X_FILE


def test_names_parse_to_hub_files():
    assert parse_name("notagen-x") == HubFile(OFFICIAL_REPO, X_FILE)
    assert parse_name("NotaGen-X") == parse_name("x") == parse_name("notagen-x")
    assert parse_name("large").filename.startswith("weights_notagen_pretrain_p_size_16_p_length_1024")
    assert parse_name(f"hf:{OFFICIAL_REPO}/{X_FILE}").official == OFFICIAL["notagen-x"]
    assert parse_name("hf:me/my-model/sub/w.pth@v2") == HubFile("me/my-model", "sub/w.pth", "v2")
    assert parse_name("runs/mini") is None and parse_name("weights.pth") is None
    for bad in ("hf:just-a-repo", "hf:owner/repo", "hf:owner/repo/file@"):
        with pytest.raises(CheckpointError, match="hf:OWNER/REPO/FILE"):
            parse_name(bad)


def test_official_registry_has_the_112_prompts():
    prompts = official_prompts()
    assert len(prompts) == 112 and len({(p["period"], p["composer"], p["instrumentation"]) for p in prompts}) == 112
    assert {p["period"] for p in prompts} == {"Baroque", "Classical", "Romantic"}
    assert sum(p["period"] == "Romantic" for p in prompts) == 80
    assert {"period": "Romantic", "composer": "Chopin, Frederic", "instrumentation": "Keyboard", "count": 0} in prompts


def test_alias_resolves_offline_converts_once_and_carries_the_registry(hub, model, capsys):
    loaded = open_checkpoint("notagen-x")
    assert loaded.info["format"] == "official" and loaded.info["source"] == str(hub)
    assert len(loaded.prompts) == 112 and loaded.config.hidden_size == CONFIG.hidden_size
    assert "converted" in capsys.readouterr().err
    converted = Path(loaded.info["loaded_from"])
    assert converted.is_relative_to(cache_dir()) and (converted / "model.safetensors").is_file()
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], tensor), key
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    again = open_checkpoint(f"hf:{OFFICIAL_REPO}/{X_FILE}")  # the same file by its full name: no new conversion
    assert "converted" not in capsys.readouterr().err
    assert again.info["loaded_from"] == str(converted)
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
    # the studio's menus and the prompt check use this registry
    assert resolve_prompt(None, "Scarlatti, Domenico", None, again.prompts).instrumentation == "Keyboard"
    with pytest.raises(PromptError, match="Chopin, Frederic"):
        resolve_prompt("Romantic", "Chopin, Frederik", "Keyboard", again.prompts)


def test_a_missing_official_file_says_what_to_download_and_where(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(CheckpointError) as error:
        open_checkpoint("notagen-x")
    message = str(error.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and str(tmp_path / "empty-hub") in message
    assert f"https://huggingface.co/{OFFICIAL_REPO}/resolve/main/{X_FILE}" in message
    assert f"hf download {OFFICIAL_REPO} {X_FILE}" in message
    assert main(["generate", "--checkpoint", "notagen-x", "-o", str(tmp_path / "out")]) == 1


def test_prompts_command_lists_the_official_registry_without_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert main(["prompts", "--checkpoint", "notagen-x"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 113 and lines[0].split() == ["period", "composer", "instrumentation"]
    assert prompts_of("large")[1] == []  # the pretrained files are unconditional
    assert len(prompts_of("large-rl")[1]) == 112


def test_a_local_official_file_by_its_released_name_gets_the_registry(tmp_path, model):
    path = export_official(model, tmp_path / X_FILE)
    assert len(load_checkpoint(path).prompts) == 112
    assert load_checkpoint(export_official(model, tmp_path / "mine.pth")).prompts == []


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_copies_are_cached_and_generate_like_the_plain_loop(hub, precision):
    loaded = open_checkpoint("notagen-x", precision=precision)
    assert loaded.info["precision"] == model_precision(loaded.model) == precision
    assert Path(loaded.info["loaded_from"]).name == precision
    stored = json.loads((Path(loaded.info["loaded_from"]) / "config.json").read_text())
    assert stored.get("precision") == ("int8" if precision == "int8" else None) and len(stored["prompts"]) == 112
    fp32 = open_checkpoint("notagen-x")
    ratio = weight_bytes(loaded.model) / weight_bytes(fp32.model)
    assert ratio == pytest.approx(0.5, abs=0.01) if precision == "bf16" else 0.25 < ratio < 0.5  # fp32 embeddings
    # engine (model modules + KV caches) and plain loop (no cache) write the same piece at this precision too
    requests = [PieceRequest(PROMPT, seed=0)]
    limits = GenerationLimits(max_patches=12)
    engine = GenerationEngine(loaded.model).generate(requests, GREEDY, limits)
    plain = generate_plain(loaded.model, requests, GREEDY, limits)
    assert engine[0].text == plain[0].text and engine[0].patches == 12
    reloaded = open_checkpoint("notagen-x", precision=precision)  # from the cache: same weights, same piece
    assert GenerationEngine(reloaded.model).generate(requests, GREEDY, limits)[0].text == engine[0].text


def test_int8_next_char_distribution_stays_close_to_fp32(hub):
    fp32, int8 = open_checkpoint("notagen-x").model, open_checkpoint("notagen-x", precision="int8").model
    torch.manual_seed(0)
    patches = torch.randint(3, 127, (2, 20, 16))
    masks = torch.ones(2, 20, dtype=torch.long)
    with torch.inference_mode():
        losses = [m(patches, masks).item() for m in (fp32, int8)]
        vectors, targets = fp32.char_targets(patches, masks)
        logits = [m.char_level_decoder.logits(m.char_level_decoder.hidden(v, targets[:, :-1]))
                  for m, v in ((fp32, vectors), (int8, int8.char_targets(patches, masks)[0]))]
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    agree = (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean().item()
    assert agree > 0.9


def test_precision_checks(hub, tmp_path, model):
    with pytest.raises(ConfigError, match="unknown precision"):
        open_checkpoint("notagen-x", precision="fp8")
    with pytest.raises(ConfigError, match="int8 runs on the CPU only"):
        open_checkpoint("notagen-x", device="cuda", precision="int8")
    # a native float directory at its own precision is loaded in place, never copied into the cache
    directory = save_checkpoint(tmp_path / "native", model)
    assert open_checkpoint(directory).info["loaded_from"] == str(directory)
    assert not (cache_dir() / "converted").exists() or not any(
        path.name.startswith("native-") for path in (cache_dir() / "converted").iterdir())


def test_generate_and_eval_take_names_and_precisions(hub, tmp_path, capsys):
    out = tmp_path / "pieces"
    code = main(["generate", "--checkpoint", "notagen-x", "--precision", "int8", "--period", "Romantic",
                 "--composer", "Chopin, Frederic", "--instrumentation", "Keyboard", "--max-bars", "1",
                 "--formats", "abc", "--retries", "0", "--device", "cpu", "-o", str(out)])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["precision"] == "int8" and manifest["model"]["source"] == str(hub)
    assert manifest["prompt"]["composer"] == "Chopin, Frederic"
    capsys.readouterr()
    assert main(["generate", "--checkpoint", "notagen-x", "--composer", "Chopin, Frederik", "-o", str(out)]) == 1
    assert "closest" in capsys.readouterr().err


def test_serve_menus_offer_the_official_prompts(hub, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from notagen.serve.app import create_app

    with TestClient(create_app("notagen-x", tmp_path / "out", device="cpu", precision="int8"),
                    base_url="http://127.0.0.1") as client:
        assert len(client.get("/api/prompts").json()["prompts"]) == 112
        assert client.get("/api/models").json()["models"][0]["precision"] == "int8"


def test_hub_tests_are_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_convert_checkpoint_takes_a_name_and_keeps_the_registry(hub, tmp_path):
    assert main(["convert-checkpoint", "notagen-x", str(tmp_path / "native")]) == 0
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert len(config["prompts"]) == 112 and "precision" not in config


def test_an_int8_directory_with_float_weights_is_refused(hub, tmp_path):
    from safetensors.torch import load_file, save_file

    int8 = Path(open_checkpoint("notagen-x", precision="int8").info["loaded_from"])
    state = load_file(str(int8 / "model.safetensors"))
    key = "char_level_decoder.base.transformer.h.0.mlp.c_fc.weight"
    assert state[key].dtype == torch.int8 and state[key.replace(".weight", ".weight_scale")].dim() == 1
    state[key] = state[key].float()
    broken = tmp_path / "broken"
    broken.mkdir()
    save_file(state, str(broken / "model.safetensors"))
    (broken / "config.json").write_text((int8 / "config.json").read_text())
    with pytest.raises(CheckpointError, match="is torch.float32, an int8 checkpoint stores int8"):
        load_checkpoint(broken)
    del state[key.replace(".weight", ".weight_scale")]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing keys: .*weight_scale"):
        load_checkpoint(broken)


def test_commands_that_take_a_checkpoint_offer_precision(capsys):
    for command in ("generate", "serve", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--precision {fp32,bf16,int8}" in text, command


def test_an_unwritable_cache_is_one_line(hub, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NOTAGEN_CACHE_DIR", str(blocker))
    with pytest.raises(CheckpointError, match="cannot write the converted copy .*NOTAGEN_CACHE_DIR"):
        open_checkpoint("notagen-x")


def test_a_local_folder_named_like_an_alias_wins(hub, tmp_path, monkeypatch, model):
    save_checkpoint(tmp_path / "large", model)
    monkeypatch.chdir(tmp_path)
    assert open_checkpoint("large").info["source"] == "large"
    assert open_checkpoint("notagen-x").info["source"] == str(hub)  # no such folder here: the hub file
