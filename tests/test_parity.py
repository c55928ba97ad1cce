"""Numerical parity with the official NotaGen architecture, rebuilt from transformers' GPT-2 classes.

The reference classes (`notagen.generation.reference.ReferenceNotaGen`) follow the official `PatchLevelDecoder`,
`CharLevelDecoder` and `NotaGenLMHeadModel`; the same random weights go into both models through the official
`.pth` layout (`export_official` / `load_checkpoint`), and per-character log-probabilities and losses must agree on
real pieces, alone and in a padded batch.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import transformers  # noqa: F401  (the `test` extra: without it these tests fail, never skip)
from torch import Tensor, nn

from notagen.checkpoint import export_official, load_checkpoint
from notagen.config import VOCAB_SIZE, ModelConfig
from notagen.generation.reference import ReferenceNotaGen
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer

FIXTURES = Path(__file__).parent / "fixtures"
PIECES = ["model_bwv269.abc", "model_aird_ranting_highlandman.abc", "model_bwv40_3.abc"]
CONFIG = ModelConfig(patch_length=64, patch_layers=2, char_layers=1, hidden_size=128, dropout=0.1)
TOLERANCE = 1e-5


def randomise(model: nn.Module, seed: int) -> None:
    """Give every parameter (LayerNorms and biases included) non-trivial random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.05 * noise)


def encode_pieces(names: list[str], seed: int = 0) -> list[list[list[int]]]:
    patchilizer = Patchilizer(patch_size=CONFIG.patch_size, patch_length=CONFIG.patch_length)
    rng = random.Random(seed)
    return [patchilizer.encode_train((FIXTURES / name).read_text(encoding="utf-8"), rng=rng) for name in names]


def batch(pieces: list[list[list[int]]]) -> tuple[Tensor, Tensor]:
    length = max(map(len, pieces))
    patches = torch.zeros(len(pieces), length, CONFIG.patch_size, dtype=torch.long)
    masks = torch.zeros(len(pieces), length, dtype=torch.long)
    for row, piece in enumerate(pieces):
        patches[row, :len(piece)] = torch.tensor(piece)
        masks[row, :len(piece)] = 1
    return patches, masks


def ours_per_char(model: NotaGenModel, patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    vectors, targets = model.char_targets(patches, masks)
    return model.char_log_probs(vectors, targets)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[NotaGenModel, ReferenceNotaGen]:
    """Our model with random weights, and the reference model loaded (strictly) from its official export."""
    torch.manual_seed(0)
    ours = NotaGenModel(CONFIG)
    randomise(ours, seed=1)
    path = export_official(ours, tmp_path_factory.mktemp("parity") / "official.pth")
    reference = ReferenceNotaGen(CONFIG)
    reference.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    return ours.eval(), reference.eval()


def test_pieces_are_long_enough_to_exercise_the_model() -> None:
    lengths = [len(piece) for piece in encode_pieces(PIECES)]
    assert all(length > 20 for length in lengths)
    assert len(set(lengths)) > 1  # the padded batch really pads
    assert max(lengths) <= CONFIG.patch_length
    full = Patchilizer(patch_length=CONFIG.patch_length).encode_train(
        (FIXTURES / PIECES[0]).read_text(encoding="utf-8"), cut=False)
    assert len(full) > CONFIG.patch_length  # this piece is cut to the context, as in training


@pytest.mark.parametrize("name", PIECES)
def test_per_character_log_probs_match_the_reference(models, name: str) -> None:
    ours, reference = models
    patches, masks = batch(encode_pieces([name]))
    with torch.no_grad():
        ref_loss, ref_log_probs, ref_real = reference(patches, masks)
        log_probs, real = ours_per_char(ours, patches, masks)
        loss = ours(patches, masks)
    assert torch.equal(real, ref_real)
    assert int(real.sum()) > 100
    torch.testing.assert_close(log_probs[real], ref_log_probs[real], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=TOLERANCE, rtol=0)
    assert abs(loss.item() - torch.log(torch.tensor(float(VOCAB_SIZE))).item()) > 0.01  # not a trivial uniform model


def test_padded_batch_matches_the_reference_and_the_pieces_alone(models) -> None:
    ours, reference = models
    pieces = encode_pieces(PIECES)
    patches, masks = batch(pieces)
    assert (masks == 0).any()
    with torch.no_grad():
        ref_loss, ref_log_probs, ref_real = reference(patches, masks)
        log_probs, real = ours_per_char(ours, patches, masks)
        loss = ours(patches, masks)
        alone = torch.cat([log_probs_alone[real_alone] for log_probs_alone, real_alone in
                           (ours_per_char(ours, *batch([piece])) for piece in pieces)])
    assert torch.equal(real, ref_real)
    torch.testing.assert_close(log_probs[real], ref_log_probs[real], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(log_probs[real], alone, atol=TOLERANCE, rtol=0)


def test_loss_gradients_match_the_reference(models) -> None:
    """Gradients too: the same loss (dropout off) gives the same patch-embedding and char-embedding gradients."""
    ours, reference = models
    patches, masks = batch(encode_pieces(PIECES[:2]))
    ours.zero_grad()
    reference.zero_grad()
    ours(patches, masks).backward()
    reference(patches, masks)[0].backward()
    ref_patch, ref_char = reference.patch_level_decoder, reference.char_level_decoder.base.transformer
    pairs = [
        (ours.patch_level_decoder.patch_embedding.weight.grad, ref_patch.patch_embedding.weight.grad),
        (ours.char_level_decoder.base.transformer.wte.weight.grad, ref_char.wte.weight.grad),
        (ours.patch_level_decoder.base.h[1].attn.c_attn.weight.grad, ref_patch.base.h[1].attn.c_attn.weight.grad.t()),
        (ours.char_level_decoder.base.transformer.h[0].mlp.c_fc.weight.grad, ref_char.h[0].mlp.c_fc.weight.grad.t()),
    ]
    for mine, theirs in pairs:
        assert mine.abs().sum() > 0
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-4)
    ours.zero_grad()
    reference.zero_grad()


def test_reference_weights_load_into_our_model(tmp_path: Path) -> None:
    """The other direction: a randomly initialised reference model saved as an official .pth file."""
    reference = ReferenceNotaGen(CONFIG)
    randomise(reference, seed=2)
    reference.eval()
    path = tmp_path / "weights_notagen_pretrain_p_size_16_p_length_1024_p_layers_20_h_size_1280.pth"
    torch.save({"model": reference.state_dict(), "epoch": 3, "min_eval_loss": 1.25}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.config == CONFIG  # inferred from shapes, not from the (misleading) file name
    assert checkpoint.info["training"] == {"epoch": 3, "min_eval_loss": 1.25}
    patches, masks = batch(encode_pieces(PIECES))
    with torch.no_grad():
        ref_loss, ref_log_probs, ref_real = reference(patches, masks)
        log_probs, real = ours_per_char(checkpoint.model, patches, masks)
    torch.testing.assert_close(log_probs[real], ref_log_probs[real], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(checkpoint.model(patches, masks), ref_loss, atol=TOLERANCE, rtol=0)


def test_the_official_style_loop_writes_what_the_engine_writes(models) -> None:
    """The HF GPT-2 reference re-running every prefix (as the original generates) and our cached engine, same
    weights, greedy: the same characters."""
    from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
    from notagen.generation.reference import generate_plain

    ours, reference = models
    requests = [PieceRequest("%Baroque\n%Bach, Johann Sebastian\n%Choral\n", seed=0)]
    greedy, limits = SamplingSettings(top_k=1), GenerationLimits(max_patches=6)
    official = generate_plain(reference, requests, greedy, limits)[0]
    engine = GenerationEngine(ours).generate(requests, greedy, limits)[0]
    assert official.patches == 6 and official.text == engine.text
