"""Checkpoints: native save/load, official .pth import/export, validation errors, convert-checkpoint."""

from __future__ import annotations

import collections
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import notagen.checkpoint as checkpoint_module
from notagen.checkpoint import (
    Checkpoint,
    default_checkpoint_path,
    export_official,
    load_checkpoint,
    load_official_state_dict,
    save_checkpoint,
)
from notagen.cli import main
from notagen.config import ModelConfig
from notagen.errors import CheckpointError
from notagen.model import NotaGenModel

TINY = ModelConfig.preset("tiny")
PROMPTS = [{"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral", "count": 12}]


def official_layout(hidden: int, patch_length: int, patch_layers: int, char_layers: int,
                    patch_size: int = 16) -> dict[str, tuple[int, ...]]:
    """Key → shape of an official NotaGen state dict, written out from the official checkpoint's key list."""
    h = hidden

    def block(prefix: str) -> dict[str, tuple[int, ...]]:
        return {
            f"{prefix}.ln_1.weight": (h,), f"{prefix}.ln_1.bias": (h,),
            f"{prefix}.attn.c_attn.weight": (h, 3 * h), f"{prefix}.attn.c_attn.bias": (3 * h,),
            f"{prefix}.attn.c_proj.weight": (h, h), f"{prefix}.attn.c_proj.bias": (h,),
            f"{prefix}.ln_2.weight": (h,), f"{prefix}.ln_2.bias": (h,),
            f"{prefix}.mlp.c_fc.weight": (h, 4 * h), f"{prefix}.mlp.c_fc.bias": (4 * h,),
            f"{prefix}.mlp.c_proj.weight": (4 * h, h), f"{prefix}.mlp.c_proj.bias": (h,),
        }

    shapes = {
        "patch_level_decoder.patch_embedding.weight": (h, patch_size * 128),
        "patch_level_decoder.patch_embedding.bias": (h,),
        "patch_level_decoder.base.wte.weight": (1, h),
        "patch_level_decoder.base.wpe.weight": (patch_length, h),
    }
    for i in range(patch_layers):
        shapes.update(block(f"patch_level_decoder.base.h.{i}"))
    shapes["patch_level_decoder.base.ln_f.weight"] = (h,)
    shapes["patch_level_decoder.base.ln_f.bias"] = (h,)
    shapes["char_level_decoder.base.transformer.wte.weight"] = (128, h)
    shapes["char_level_decoder.base.transformer.wpe.weight"] = (patch_size + 1, h)
    for j in range(char_layers):
        shapes.update(block(f"char_level_decoder.base.transformer.h.{j}"))
    shapes["char_level_decoder.base.transformer.ln_f.weight"] = (h,)
    shapes["char_level_decoder.base.transformer.ln_f.bias"] = (h,)
    shapes["char_level_decoder.base.lm_head.weight"] = (128, h)
    return shapes


def random_official_state(hidden: int = 128, patch_length: int = 48, patch_layers: int = 3, char_layers: int = 2,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=generator)
             for key, shape in official_layout(hidden, patch_length, patch_layers, char_layers).items()}
    state["char_level_decoder.base.lm_head.weight"] = state["char_level_decoder.base.transformer.wte.weight"]
    return state


def assert_same_weights(a: NotaGenModel, b: NotaGenModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_tied(model: NotaGenModel) -> None:
    head = model.char_level_decoder.base
    assert head.lm_head.weight is head.transformer.wte.weight


@pytest.fixture
def tiny_model() -> NotaGenModel:
    torch.manual_seed(0)
    return NotaGenModel(TINY)


# -- native ---------------------------------------------------------------------------------------------------


def test_native_round_trip_keeps_weights_config_prompts_and_provenance(tiny_model, tmp_path: Path) -> None:
    directory = save_checkpoint(tmp_path / "ckpt", tiny_model, PROMPTS, {"stage": "pretrain", "steps": 7})
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    loaded = load_checkpoint(directory)
    assert isinstance(loaded, Checkpoint)
    assert loaded.config == TINY
    assert loaded.prompts == PROMPTS
    assert loaded.info["format"] == "native"
    assert loaded.info["source"] == str(directory)
    assert loaded.info["training"] == {"stage": "pretrain", "steps": 7}
    assert loaded.info["parameters"] == tiny_model.num_parameters() == TINY.num_parameters()
    assert_same_weights(tiny_model, loaded.model)
    assert_tied(loaded.model)
    assert not loaded.model.training
    assert all(p.requires_grad for p in loaded.model.parameters())
    assert len(list(loaded.model.parameters())) == len(list(tiny_model.parameters()))
    config = json.loads((directory / "config.json").read_text())
    assert config["format"] == "notagen" and config["version"] == 1 and config["model"] == TINY.to_dict()


def test_lm_head_is_stored_once(tiny_model, tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tiny_model)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as handle:
        keys = set(handle.keys())
    assert "char_level_decoder.base.transformer.wte.weight" in keys
    assert not any("lm_head" in key for key in keys)
    assert len(keys) == len(tiny_model.state_dict()) - 1


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_load_accepts_a_file_inside_the_directory(tiny_model, tmp_path: Path, name: str) -> None:
    save_checkpoint(tmp_path, tiny_model)
    assert_same_weights(tiny_model, load_checkpoint(tmp_path / name).model)


def test_dtype_is_kept_or_converted(tiny_model, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "half", tiny_model.half())
    assert load_checkpoint(tmp_path / "half").info["dtype"] == "float16"
    loaded = load_checkpoint(tmp_path / "half", dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert load_checkpoint(tmp_path / "half", dtype="bfloat16").info["dtype"] == "bfloat16"


def test_saving_again_overwrites_and_a_bad_provenance_writes_nothing(tiny_model, tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tiny_model, training={"step": 1})
    other = NotaGenModel(TINY)
    save_checkpoint(tmp_path, other, training={"step": 2})
    loaded = load_checkpoint(tmp_path)
    assert loaded.info["training"] == {"step": 2}
    assert_same_weights(other, loaded.model)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "bad", tiny_model, training={"when": object()})
    assert not (tmp_path / "bad").exists()


def write_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": 2}, "unsupported checkpoint version 2"),
    ({"format": "other"}, "not a notagen checkpoint config"),
    ({"extra": 1}, "unknown keys extra"),
    ({"model": {**TINY.to_dict(), "rotary": True}}, "unknown model config keys: rotary"),
    ({"prompts": [{"period": "Baroque"}]}, "prompt 0 must be"),
])
def test_bad_config_json_is_refused(tiny_model, tmp_path: Path, changes: dict, message: str) -> None:
    save_checkpoint(tmp_path, tiny_model)
    write_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_match_the_config_are_refused(tiny_model, tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tiny_model)
    write_config(tmp_path, model=ModelConfig.preset("tiny", patch_layers=3, patch_length=32).to_dict())
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    message = str(error.value)
    assert "missing keys: patch_level_decoder.base.h.2." in message
    assert "shape mismatch: patch_level_decoder.base.wpe.weight [64, 64] != [32, 64]" in message
    assert "\n" not in message


def test_missing_or_corrupt_native_files_are_refused(tiny_model, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, tiny_model)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        load_checkpoint(tmp_path)


def test_default_checkpoint_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model) -> None:
    bundled = tmp_path / "notagen-mini"
    monkeypatch.setattr(checkpoint_module, "DEFAULT_MODEL_DIR", bundled)
    assert default_checkpoint_path() is None
    save_checkpoint(bundled, tiny_model)
    assert default_checkpoint_path() == bundled


# -- official -------------------------------------------------------------------------------------------------


def test_official_import_infers_the_architecture_from_shapes(tmp_path: Path) -> None:
    state = random_official_state(hidden=128, patch_length=48, patch_layers=3, char_layers=2)
    path = tmp_path / "weights_notagen_p_size_16_p_length_1024_p_layers_20_c_layers_6_h_size_1280.pth"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 4}, path)
    native, config = load_official_state_dict(path)
    assert config == ModelConfig(patch_size=16, patch_length=48, patch_layers=3, char_layers=2, hidden_size=128)
    assert config.heads == 2
    # Conv1D [in, out] → Linear [out, in]
    key = "patch_level_decoder.base.h.1.attn.c_attn.weight"
    assert torch.equal(native[key], state[key].t())
    assert native["patch_level_decoder.base.h.1.mlp.c_fc.weight"].shape == (512, 128)
    loaded = load_checkpoint(path)
    assert loaded.info["format"] == "official" and loaded.info["training"] == {"epoch": 4}
    assert loaded.prompts == []
    assert_tied(loaded.model)


def test_official_import_then_export_gives_identical_tensors(tmp_path: Path) -> None:
    state = random_official_state()
    with_buffers = dict(state)
    with_buffers["patch_level_decoder.base.h.0.attn.bias"] = torch.ones(1, 1, 48, 48).tril().bool()
    with_buffers["patch_level_decoder.base.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save({"model": with_buffers}, tmp_path / "in.pth")
    model = load_checkpoint(tmp_path / "in.pth").model
    export_official(model, tmp_path / "out.pth")
    exported = torch.load(tmp_path / "out.pth", weights_only=True)
    assert set(exported) == {"model"}
    assert list(exported["model"]) and set(exported["model"]) == set(state)
    for key, tensor in state.items():
        assert torch.equal(exported["model"][key], tensor), key
        assert exported["model"][key].is_contiguous()


def test_numpy_training_counters_are_read_but_other_globals_refused(tmp_path: Path) -> None:
    state = random_official_state()
    torch.save({"model": state, "epoch": np.int64(12), "min_eval_loss": np.float64(0.75)}, tmp_path / "np.pth")
    loaded = load_checkpoint(tmp_path / "np.pth")
    assert loaded.info["training"] == {"epoch": 12, "min_eval_loss": 0.75}
    torch.save({"model": state, "schedule": collections.OrderedDict(a=1), "callback": print}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint .*UnpicklingError"):
        load_checkpoint(tmp_path / "code.pth")


@pytest.mark.parametrize("keep", ["lm_head", "wte"])
def test_either_tied_key_is_enough(tmp_path: Path, keep: str) -> None:
    state = random_official_state()
    wte = state["char_level_decoder.base.transformer.wte.weight"]
    del state["char_level_decoder.base.transformer.wte.weight" if keep == "lm_head" else
              "char_level_decoder.base.lm_head.weight"]
    torch.save(state, tmp_path / "bare.pth")  # a bare state dict, without the {'model': …} wrapper
    model = load_checkpoint(tmp_path / "bare.pth").model
    assert torch.equal(model.char_level_decoder.base.lm_head.weight, wte)
    assert_tied(model)


def test_ddp_prefix_and_legacy_serialisation_are_accepted(tmp_path: Path) -> None:
    state = random_official_state(seed=3)
    prefixed = {f"module.{key}": value for key, value in state.items()}
    torch.save({"model": prefixed}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(tmp_path / "legacy.pth")
    native, _ = load_official_state_dict(tmp_path / "legacy.pth")
    assert torch.equal(native["patch_level_decoder.base.wpe.weight"], state["patch_level_decoder.base.wpe.weight"])


def test_untied_lm_head_is_refused(tmp_path: Path) -> None:
    state = random_official_state()
    state["char_level_decoder.base.lm_head.weight"] = torch.zeros(128, 128)
    torch.save({"model": state}, tmp_path / "untied.pth")
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        load_checkpoint(tmp_path / "untied.pth")


def test_wrong_keys_and_shapes_are_named(tmp_path: Path) -> None:
    state = random_official_state()
    del state["char_level_decoder.base.transformer.h.1.mlp.c_fc.bias"]
    state["patch_level_decoder.extra.weight"] = torch.zeros(3)
    # a Linear-layout (untransposed) weight in an official file
    key = "patch_level_decoder.base.h.0.mlp.c_fc.weight"
    state[key] = state[key].t().contiguous()
    torch.save({"model": state}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "wrong.pth")
    message = str(error.value)
    assert message.startswith(str(tmp_path / "wrong.pth"))
    assert "missing keys: char_level_decoder.base.transformer.h.1.mlp.c_fc.bias" in message
    assert "unexpected keys: patch_level_decoder.extra.weight" in message
    assert f"shape mismatch: {key} [512, 128] != [128, 512]" in message
    assert "\n" not in message


def test_many_problems_are_summarised(tmp_path: Path) -> None:
    state = {k: v for k, v in random_official_state().items() if ".h.2." not in k}
    state["patch_level_decoder.base.h.5.ln_1.weight"] = torch.ones(128)  # a gap: layers 2-4 missing
    torch.save(state, tmp_path / "gap.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: .* \(\+\d+ more\)"):
        load_checkpoint(tmp_path / "gap.pth")


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path, tiny_model) -> None:
    good = export_official(tiny_model, tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.pth"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes())
    clamp = tmp_path / "clamp2.pth"
    torch.save({"model": {"symbolic_model.embeddings.weight": torch.zeros(4, 4),
                          "text_model.embeddings.word_embeddings.weight": torch.zeros(4, 4)}}, clamp)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path, message in [(truncated, "not a readable PyTorch checkpoint"),
                          (noise, "not a readable PyTorch checkpoint"),
                          (empty, "not a readable PyTorch checkpoint"),
                          (clamp, "not a NotaGen checkpoint .*symbolic_model.embeddings.weight"),
                          (tensor, "not a checkpoint \\(holds a Tensor")]:
        with pytest.raises(CheckpointError, match=message) as error:
            load_checkpoint(path)
        assert "\n" not in str(error.value), path


def test_export_refuses_a_head_count_the_official_code_cannot_express(tmp_path: Path) -> None:
    model = NotaGenModel(ModelConfig.preset("tiny", hidden_size=128, n_heads=4))
    with pytest.raises(CheckpointError, match="hidden_size // 64 = 2"):
        export_official(model, tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())


# -- convert-checkpoint -----------------------------------------------------------------------------------------


def test_convert_official_to_native_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = random_official_state()
    torch.save({"model": state}, tmp_path / "official.pth")
    assert main(["convert-checkpoint", str(tmp_path / "official.pth"), str(tmp_path / "native")]) == 0
    assert "wrote" in capsys.readouterr().out
    native = load_checkpoint(tmp_path / "native")
    assert native.info["training"]["converted_from"] == {"source": str(tmp_path / "official.pth"),
                                                         "format": "official"}
    assert main(["convert-checkpoint", str(tmp_path / "native"), str(tmp_path / "back.pth"),
                 "--to", "official"]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert set(back) == set(state)
    assert all(torch.equal(back[key], state[key]) for key in state)


def test_convert_can_shorten_the_context(tmp_path: Path, tiny_model) -> None:
    save_checkpoint(tmp_path / "long", tiny_model, PROMPTS)
    assert main(["convert-checkpoint", str(tmp_path / "long"), str(tmp_path / "short"), "--patch-length", "16"]) == 0
    short = load_checkpoint(tmp_path / "short")
    assert short.config.patch_length == 16
    assert short.prompts == PROMPTS
    wpe = "patch_level_decoder.base.wpe.weight"
    assert torch.equal(short.model.state_dict()[wpe], tiny_model.state_dict()[wpe][:16])


def test_convert_errors_are_one_line(tmp_path: Path, tiny_model, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(tmp_path / "ckpt", tiny_model)
    assert main(["convert-checkpoint", str(tmp_path / "ckpt"), str(tmp_path / "x"), "--patch-length", "65"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("notagen: error: --patch-length must be between 1 and the checkpoint's 64")
    assert err.count("\n") == 1
    assert main(["convert-checkpoint", str(tmp_path / "missing.pth"), str(tmp_path / "y")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
