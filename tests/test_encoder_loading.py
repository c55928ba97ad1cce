"""Official-layout loading: a randomly initialised CLaMP 2 / M3 file built with transformers' own BERT and GPT-2
classes loads into our module and gives the same outputs; wrong or corrupt files give one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers  # the `test` extra: without it these tests fail, never skip
from torch import nn

from notagen.encoder.loading import export_encoder, load_encoder, load_native, load_official, save_encoder
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.encoder.patchilizer import M3Patchilizer
from notagen.errors import CheckpointError

HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 128, 2, 2, 256, 32
ABC = "L:1/8\nM:4/4\nK:G\nV:1\n[V:1]GABc d2 e2|[V:1]d2 B2 G4|\n[V:1]c2 A2 F2 D2|[V:1]G8|]\n"


class OfficialPatchEncoder(nn.Module):
    """The reference's M3PatchEncoder: one-hot → Linear → BertModel(inputs_embeds)."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.BertConfig(vocab_size=1, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                         num_attention_heads=HEADS, intermediate_size=FFN,
                                         max_position_embeddings=POSITIONS)
        self.patch_embedding = nn.Linear(64 * 128, HIDDEN)
        self.base = transformers.BertModel(config)

    def forward(self, patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(patches, num_classes=128).reshape(len(patches), -1, 64 * 128)
        return self.base(inputs_embeds=self.patch_embedding(one_hot.float()), attention_mask=masks).last_hidden_state


class OfficialClamp2Music(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.music_model = OfficialPatchEncoder()
        self.music_proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        states = self.music_model(patches, masks)
        m = masks.unsqueeze(-1).float()
        return self.music_proj((states * m).sum(1) / m.sum(1))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    patchilizer = M3Patchilizer(64, POSITIONS)
    a = patchilizer.encode(ABC, add_special_patches=True)
    b = patchilizer.encode(ABC.replace("GABc", "FEDC"), add_special_patches=True)[:5]
    patches = torch.zeros(2, len(a), 64, dtype=torch.long)
    masks = torch.zeros(2, len(a), dtype=torch.long)
    patches[0], masks[0] = torch.tensor(a), 1
    patches[1, :len(b)], masks[1, :len(b)] = torch.tensor(b), 1
    return patches, masks


def _randomise(module: nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.05)


def test_clamp2_layout_matches_transformers(tmp_path):
    official = OfficialClamp2Music().eval()
    _randomise(official)
    state = official.state_dict()
    state["text_proj.weight"] = torch.zeros(4, 4)  # the text tower is skipped
    torch.save({"model": state, "epoch": 7}, tmp_path / "clamp2.pth")
    loaded = load_official(tmp_path / "clamp2.pth")
    assert loaded.kind == "clamp2" and loaded.mode == "clamp2" and loaded.info["epoch"] == 7
    assert loaded.model.config.num_layers == LAYERS and loaded.model.config.patch_length == POSITIONS
    patches, masks = _batch()
    with torch.no_grad():
        ours_states = loaded.model.encoder(patches, masks)
        ref_states = official.music_model(patches, masks)
        assert torch.allclose(ours_states[masks.bool()], ref_states[masks.bool()], atol=1e-5)
        assert torch.allclose(loaded.model.pooled(patches, masks), official(patches, masks), atol=1e-5)


def test_clamp3_prefixes_load(tmp_path):
    official = OfficialClamp2Music().eval()
    _randomise(official)
    state = {k.replace("music_model.", "symbolic_model.").replace("music_proj.", "symbolic_proj."): v
             for k, v in official.state_dict().items()}
    torch.save({"model": state}, tmp_path / "clamp3.pth")
    loaded = load_encoder(tmp_path / "clamp3.pth")
    patches, masks = _batch()
    with torch.no_grad():
        assert loaded.kind == "clamp3"
        assert torch.allclose(loaded.model.pooled(patches, masks), official(patches, masks), atol=1e-5)
    # CLaMP 3 drops "L:1/8" before patching; CLaMP 2 keeps it.
    extractor = loaded.extractor()
    assert extractor.strip_default_length and extractor.name == "CLaMP 3"
    assert extractor.embed([ABC]) == pytest.approx(extractor.embed([ABC.replace("L:1/8\n", "")]), abs=1e-6)


def test_m3_layout_with_decoder_matches_transformers(tmp_path):
    encoder = OfficialPatchEncoder().eval()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=HIDDEN,
                                                                n_layer=1, n_head=HEADS)).eval()
    _randomise(encoder)
    _randomise(gpt2)
    gpt2.tie_weights()
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.base.{k}": v for k, v in gpt2.state_dict().items()})
    torch.save({"model": state}, tmp_path / "m3.pth")
    loaded = load_official(tmp_path / "m3.pth", with_decoder=True)
    assert loaded.kind == "m3" and loaded.mode == "m3" and loaded.model.music_proj is None
    patches, masks = _batch()
    with torch.no_grad():
        states = encoder(patches, masks)
        targets = patches[0, :6]
        # The reference decoder: the patch state replaces the bos embedding; pads are labelled -100.
        labels = targets.masked_fill(targets == 0, -100)
        embeds = torch.nn.functional.embedding(targets, gpt2.transformer.wte.weight)
        embeds = torch.cat([states[0, :6].unsqueeze(1), embeds[:, 1:]], dim=1)
        ref_loss = gpt2(inputs_embeds=embeds, attention_mask=(labels != -100).long(), labels=labels).loss
        ours = loaded.model.decoder(loaded.model.encoder(patches, masks)[0, :6], targets)
    assert torch.allclose(ours, ref_loss, atol=1e-5)


def test_native_round_trip(tmp_path):
    model = M3Model(EncoderConfig.preset("tiny"), with_decoder=True).eval()
    save_encoder(model, tmp_path / "enc", name="test-enc", training={"steps": 3})
    loaded = load_encoder(tmp_path / "enc", with_decoder=True)
    assert loaded.name == "test-enc" and len(loaded.weights_id) == 16 and loaded.info["steps"] == 3
    patches, masks = _batch()
    with torch.no_grad():
        assert torch.equal(model.pooled(patches, masks), loaded.model.pooled(patches, masks))


def test_directories_with_the_old_decoder_block_names_still_load(tmp_path):
    """Before the decoder used notagen.model.Block its blocks were named c_attn, c_proj, c_fc, mlp_proj."""
    from safetensors.torch import load_file, save_file

    model = M3Model(EncoderConfig.preset("tiny"), with_decoder=True).eval()
    directory = save_encoder(model, tmp_path / "enc")
    weights = Path(directory) / "model.safetensors"
    old = {"attn.c_attn": "c_attn", "attn.c_proj": "c_proj", "mlp.c_fc": "c_fc", "mlp.c_proj": "mlp_proj"}
    state = {}
    for key, value in load_file(str(weights)).items():
        for new_name, old_name in old.items():
            key = key.replace(f".{new_name}.", f".{old_name}.") if key.startswith("decoder.blocks.") else key
        state[key] = value
    assert "decoder.blocks.0.mlp_proj.weight" in state
    save_file(state, str(weights))
    loaded = load_encoder(directory, with_decoder=True)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_export_for_shipping_drops_the_decoder_and_halves(tmp_path):
    torch.manual_seed(0)
    model = M3Model(EncoderConfig.preset("tiny"), with_decoder=True)
    save_encoder(model, tmp_path / "trained", name="enc", training={"step": 5})
    export_encoder(tmp_path / "trained", tmp_path / "shipped")
    shipped = load_encoder(tmp_path / "shipped")
    assert shipped.info["dtype"] == "float16" and shipped.info["step"] == 5
    assert next(shipped.model.parameters()).dtype == torch.float32  # stored half, computed in float32
    size = (tmp_path / "shipped" / "model.safetensors").stat().st_size
    assert size < 0.45 * (tmp_path / "trained" / "model.safetensors").stat().st_size
    original = load_encoder(tmp_path / "trained").extractor().embed([ABC])
    assert shipped.extractor().embed([ABC]) == pytest.approx(original, abs=5e-3)


def _error_line(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_encoder(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_corrupt_and_wrong_files_give_one_line(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint at all" * 10)
    assert "cannot read" in _error_line(tmp_path / "garbage.pth")
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    assert "not a CLaMP 2, CLaMP 3 or M3" in _error_line(tmp_path / "other.pth")
    assert "no such" in _error_line(tmp_path / "missing.pth")

    official = OfficialClamp2Music()
    state = official.state_dict()
    del state["music_model.base.encoder.layer.1.output.dense.bias"]
    state["music_model.base.encoder.layer.0.extra.weight"] = torch.zeros(1)
    state["music_model.base.embeddings.LayerNorm.weight"] = torch.zeros(HIDDEN + 1)
    torch.save({"model": state}, tmp_path / "broken.pth")
    message = _error_line(tmp_path / "broken.pth")
    assert "missing keys: encoder.layers.1.ffn_out.bias" in message
    assert "unexpected keys: music_model.base.encoder.layer.0.extra.weight" in message
    assert "shape mismatch: encoder.embed_norm.weight" in message

    model = M3Model(EncoderConfig.preset("tiny"), with_decoder=False)
    save_encoder(model, tmp_path / "native")
    (tmp_path / "native" / "model.safetensors").write_bytes(b"{corrupt")
    assert "cannot read safetensors" in _error_line(tmp_path / "native")
    with pytest.raises(CheckpointError):
        load_native(tmp_path)
