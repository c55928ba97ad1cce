"""The two-level model: shapes, loss, masking, padding invariance, gradients, and the KV-cache protocol."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from notagen.config import PAD_ID, VOCAB_SIZE, ModelConfig
from notagen.model import NotaGenModel, char_subset, target_char_counts
from notagen.patchilizer import Patchilizer

FIXTURES = Path(__file__).parent / "fixtures"
TINY = ModelConfig.preset("tiny")  # hidden 64, 1 head, 2 + 1 layers, 64 patches, no dropout
TWO_HEADS = ModelConfig.preset("tiny", hidden_size=128)


def encode(name: str, patch_length: int = 64) -> list[list[int]]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return Patchilizer(patch_length=patch_length).encode_train(text, rng=random.Random(0))


def batch(pieces: list[list[list[int]]]) -> tuple[Tensor, Tensor]:
    length = max(map(len, pieces))
    patches = torch.zeros(len(pieces), length, 16, dtype=torch.long)
    masks = torch.zeros(len(pieces), length, dtype=torch.long)
    for row, piece in enumerate(pieces):
        patches[row, :len(piece)] = torch.tensor(piece)
        masks[row, :len(piece)] = 1
    return patches, masks


@pytest.fixture(scope="module")
def pieces() -> list[list[list[int]]]:
    return [encode("model_aird_ranting_highlandman.abc"), encode("model_bwv40_3.abc"),
            encode("model_aird_todlen_hame.abc")]


def new_model(config: ModelConfig = TINY, seed: int = 0) -> NotaGenModel:
    torch.manual_seed(seed)
    return NotaGenModel(config)


def real_chars(patches: Tensor, masks: Tensor) -> int:
    """Target characters that count in the loss: non-pad chars of every real patch but the first."""
    targets = patches[:, 1:][masks[:, 1:].bool()]
    return int((targets != PAD_ID).sum())


# -- structure ------------------------------------------------------------------------------------------------


def test_shapes(pieces) -> None:
    model = new_model(TWO_HEADS).eval()
    patches, masks = batch(pieces)
    B, N = masks.shape
    hidden = model.patch_level_decoder(patches)
    assert hidden.shape == (B, N, 128)
    vectors, targets = model.char_targets(patches, masks)
    M = int(masks.sum()) - B  # per row: every real patch but the last (inputs) / but the first (targets)
    assert vectors.shape == (M, 128)
    assert targets.shape == (M, 16)
    assert torch.equal(targets[0], patches[0, 1])  # the first target is the patch after BOS
    log_probs, real = model.char_log_probs(vectors, targets)
    assert log_probs.shape == real.shape == targets.shape
    assert (log_probs <= 0).all()
    assert model(patches, masks, reduction="sequence").shape == (B,)
    assert model.forward(patches, masks).shape == ()


def test_patch_embedding_equals_the_one_hot_projection(pieces) -> None:
    model = new_model()
    patches = torch.tensor(pieces[0])[None]
    one_hot = F.one_hot(patches, VOCAB_SIZE).float().flatten(-2)
    expected = model.patch_level_decoder.patch_embedding(one_hot)
    torch.testing.assert_close(model.patch_level_decoder.embed(patches), expected, atol=1e-6, rtol=1e-5)


def test_lm_head_is_tied_to_the_char_embedding() -> None:
    model = new_model()
    head = model.char_level_decoder.base
    assert head.lm_head.weight is head.transformer.wte.weight
    assert model.num_parameters() == TINY.num_parameters()


@pytest.mark.parametrize(("preset", "millions", "patch_millions"), [
    ("small", 109.6, 88.2), ("medium", 243.7, 205.7), ("large", 515.7, 397.5)])
def test_official_sizes_have_the_official_parameter_counts(preset: str, millions: float,
                                                           patch_millions: float) -> None:
    config = ModelConfig.preset(preset)
    with torch.device("meta"):
        model = NotaGenModel(config)
    assert round(model.num_parameters() / 1e6, 1) == millions == round(config.num_parameters() / 1e6, 1)
    patch = sum(p.numel() for p in model.patch_level_decoder.parameters())
    assert round(patch / 1e6, 1) == patch_millions


# -- loss -----------------------------------------------------------------------------------------------------


def test_initial_loss_is_close_to_uniform(pieces) -> None:
    model = new_model().eval()
    loss = model(*batch(pieces))
    assert torch.isfinite(loss)
    assert abs(loss.item() - math.log(VOCAB_SIZE)) < 0.05


def test_inputs_are_not_modified(pieces) -> None:
    model = new_model().eval()
    patches, masks = batch(pieces)
    saved_patches, saved_masks = patches.clone(), masks.clone()
    model(patches, masks)
    model(patches, masks, reduction="sequence")
    model.char_targets(patches, masks.bool())
    assert torch.equal(patches, saved_patches) and torch.equal(masks, saved_masks)
    assert masks[:, 0].all()  # the reference zeroes this column in place


def test_loss_does_not_depend_on_padding(pieces) -> None:
    model = new_model(TWO_HEADS).eval()
    patches, masks = batch(pieces)
    assert (masks == 0).any()
    with torch.no_grad():
        together = -model(patches, masks, reduction="sequence")
        alone = -torch.stack([model(*batch([piece]), reduction="sequence")[0] for piece in pieces])
        losses_alone = [model(*batch([piece])) for piece in pieces]
        # more padding than any piece needs changes nothing either
        extra_p, extra_m = batch(pieces)
        extra_p = torch.cat([extra_p, torch.zeros(len(pieces), 7, 16, dtype=torch.long)], dim=1)
        extra_m = torch.cat([extra_m, torch.zeros(len(pieces), 7, dtype=torch.long)], dim=1)
        padded_more = -model(extra_p, extra_m, reduction="sequence")
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(padded_more, together, atol=1e-4, rtol=1e-6)
    for piece, loss, log_prob in zip(pieces, losses_alone, alone):
        n = real_chars(*batch([piece]))
        torch.testing.assert_close(loss, -log_prob / n, atol=1e-6, rtol=1e-5)


def test_sequence_log_probs_agree_with_the_loss(pieces) -> None:
    model = new_model(TWO_HEADS).eval()
    patches, masks = batch(pieces)
    with torch.no_grad():
        loss = model(patches, masks)
        per_sequence = -model(patches, masks, reduction="sequence")
    torch.testing.assert_close(loss, -per_sequence.sum() / real_chars(patches, masks), atol=1e-6, rtol=1e-5)


def test_one_loss_reduces_by_mean_sum_or_sequence(pieces) -> None:
    model = new_model(TWO_HEADS).eval()
    patches, masks = batch(pieces)
    with torch.no_grad():
        mean, total = model(patches, masks), model(patches, masks, reduction="sum")
        per_sequence = model(patches, masks, reduction="sequence")
    chars = int(target_char_counts(patches, masks).sum())
    assert chars == real_chars(patches, masks)
    torch.testing.assert_close(mean * chars, total, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(per_sequence.sum(), total, atol=1e-5, rtol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        model(patches, masks, reduction="none")
    with pytest.raises(ValueError, match="no pick"):
        model(patches, masks, pick=torch.tensor([0]), reduction="sequence")


def test_char_subset_trains_on_a_random_subset_of_target_patches(pieces) -> None:
    model = new_model().eval()
    patches, masks = batch(pieces)
    vectors, targets = model.char_targets(patches, masks)
    total = targets.size(0)
    assert char_subset(total, 0) is None and char_subset(total, total) is None
    with torch.no_grad():
        full = model(patches, masks)
        pick = char_subset(total, 10, torch.Generator().manual_seed(3))
        assert torch.equal(pick, torch.randperm(total, generator=torch.Generator().manual_seed(3))[:10])
        limited = model(patches, masks, pick)
        log_probs, real = model.char_log_probs(vectors[pick], targets[pick])
        expected = -(log_probs * real).sum() / real.sum()
        others = {model(patches, masks, char_subset(total, 10, torch.Generator().manual_seed(s))).item()
                  for s in range(4)}
    torch.testing.assert_close(limited, expected)
    assert len(others) > 1 and not torch.equal(limited, full)


def test_gradient_checkpointing_gives_the_same_gradients(pieces) -> None:
    model = new_model(TWO_HEADS).train()
    patches, masks = batch(pieces)
    model(patches, masks).backward()
    # the patch decoder's wte (vocabulary 1) is unused, as in the official model, and gets no gradient
    plain = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert set(dict(model.named_parameters())) - set(plain) == {"patch_level_decoder.base.wte.weight"}
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(patches, masks).backward()
    for name, grad in plain.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-6, rtol=1e-4)
    assert any(plain[name].abs().sum() > 0 for name in plain if "patch_level_decoder.base.h.0" in name)


def test_a_few_steps_overfit_one_piece(pieces) -> None:
    model = new_model().train()
    patches, masks = batch(pieces[:1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(patches, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert losses[-1] < min(losses[:5])


def test_dropout_only_in_training_mode(pieces) -> None:
    model = new_model(ModelConfig.preset("tiny", dropout=0.1))
    patches, masks = batch(pieces[:1])
    model.eval()
    assert torch.equal(model(patches, masks), model(patches, masks))
    model.train()
    assert not torch.equal(model(patches, masks), model(patches, masks))


# -- incremental decoding (the generation engine's cache protocol) ---------------------------------------------


class ConcatCache:
    """The simplest cache honouring `update(layer, k, v) -> (k_all, v_all)`: concatenate along time."""

    def __init__(self, layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * layers
        self.values: list[Tensor | None] = [None] * layers

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


@pytest.mark.parametrize("chunk", [1, 3])
def test_patch_decoder_with_a_cache_equals_the_full_pass(pieces, chunk: int) -> None:
    model = new_model(TWO_HEADS).eval()
    patches, _ = batch([pieces[1][:30], pieces[2][:30]])
    decoder = model.patch_level_decoder
    with torch.no_grad():
        full = decoder(patches)
        cache = ConcatCache(TWO_HEADS.patch_layers)
        steps = [decoder(patches[:, :5], 0, cache)]  # prefill, then `chunk` patches at a time
        for start in range(5, patches.size(1), chunk):
            steps.append(decoder(patches[:, start:start + chunk], start, cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_patch_decoder_ragged_rows_with_a_mask_equal_each_row_alone(pieces) -> None:
    """Right-aligned rows of different lengths: left slots masked out, per-row positions."""
    model = new_model(TWO_HEADS).eval()
    decoder = model.patch_level_decoder
    rows = [torch.tensor(pieces[0][:6])[None], torch.tensor(pieces[1][:4])[None]]
    nexts = [torch.tensor(pieces[0][6:7])[None], torch.tensor(pieces[1][4:5])[None]]
    with torch.no_grad():
        alone, caches = [], []
        for row, nxt in zip(rows, nexts):
            cache = ConcatCache(TWO_HEADS.patch_layers)
            decoder(row, 0, cache)
            caches.append(cache)
            alone.append(decoder(torch.cat([row, nxt], dim=1))[:, -1])
        joint = ConcatCache(TWO_HEADS.patch_layers)
        for layer in range(TWO_HEADS.patch_layers):
            pad = caches[0].keys[layer].size(2) - caches[1].keys[layer].size(2)
            joint.keys[layer] = torch.cat([caches[0].keys[layer], F.pad(caches[1].keys[layer], (0, 0, pad, 0))])
            joint.values[layer] = torch.cat([caches[0].values[layer],
                                             F.pad(caches[1].values[layer], (0, 0, pad, 0))])
        mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
        mask[1, :, :, :2] = False
        step = decoder(torch.cat(nexts), torch.tensor([[6], [4]]), joint, mask)
    torch.testing.assert_close(step[:, 0], torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_char_decoder_with_a_cache_equals_the_full_pass(pieces) -> None:
    model = new_model(TWO_HEADS).eval()
    patches, masks = batch(pieces[:2])
    with torch.no_grad():
        vectors, targets = model.char_targets(patches, masks)
        vectors, chars = vectors[:8], targets[:8, :-1]
        decoder = model.char_level_decoder
        full = decoder.hidden(vectors, chars)
        assert full.shape == (8, 16, 128)
        cache = ConcatCache(TWO_HEADS.char_layers)
        steps = [decoder.hidden(vectors, chars[:, :0], 0, cache)]  # the patch vector alone at position 0
        for t in range(chars.size(1)):
            steps.append(decoder.hidden(vectors, chars[:, t:t + 1], t + 1, cache))
        incremental = torch.cat(steps, dim=1)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoder.logits(incremental), decoder.logits(full), atol=1e-5, rtol=1e-5)
