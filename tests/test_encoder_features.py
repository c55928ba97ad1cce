"""CLaMP 2 whole-piece features: segmenting and weighting rules checked with small numbers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from notagen.encoder.features import FeatureExtractor, segments
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.encoder.patchilizer import M3Patchilizer


def test_segments_hand_worked():
    assert segments(1100, 512) == [(0, 512, 512), (512, 1024, 512), (588, 1100, 76)]
    assert segments(1024, 512) == [(0, 512, 512), (512, 1024, 512)]
    assert segments(300, 512) == [(0, 300, 300)]
    assert segments(1100, 128)[-2:] == [(896, 1024, 128), (972, 1100, 76)]
    assert len(segments(1100, 128)) == 9


def _piece_with_patches(n: int) -> str:
    rng = random.Random(0)
    bars = ["".join(rng.choice("CDEFGABcdefgab") for _ in range(rng.randint(2, 8))) + "|" for _ in range(n - 4)]
    lines = ["".join(bars[i:i + 8]) for i in range(0, len(bars), 8)]
    return "%Classical\n%end\nL:1/8\nK:C\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def model() -> M3Model:
    torch.manual_seed(0)
    config = EncoderConfig.preset("tiny", projection=True)  # patch_length 128
    return M3Model(config, with_decoder=False).eval()


def test_feature_is_the_weighted_mean_of_chunk_vectors(model):
    text = _piece_with_patches(1100)
    extractor = FeatureExtractor(model, mode="clamp2", batch_size=4)
    patches = extractor.piece_patches(text)
    assert len(patches) == 1100  # bos + L: + K: + 1096 bars + eos; the prompt lines are gone
    # By hand: chunks [0,128) … [896,1024) weigh 128 each, the last is [972,1100) weighing 1100 - 1024 = 76.
    vectors = []
    with torch.no_grad():
        for start in [*range(0, 1024, 128), 972]:
            chunk = torch.tensor(patches[start:start + 128]).unsqueeze(0)
            vectors.append(model.pooled(chunk, torch.ones(1, 128, dtype=torch.long)).double())
    weights = torch.tensor([128.0] * 8 + [76.0], dtype=torch.float64)
    expected = (torch.cat(vectors) * weights[:, None]).sum(0) / 1100
    got = extractor.embed([text])
    assert got.shape == (1, 128)
    np.testing.assert_allclose(got[0], expected.numpy(), atol=1e-5)
    # The last vector, wrongly weighted by 128, would give a different answer (the quirk matters).
    wrong = (torch.cat(vectors) * 128).sum(0) / (9 * 128)
    assert not np.allclose(got[0], wrong.numpy(), atol=1e-4)


def test_batching_padding_and_prompt_lines_do_not_change_features(model):
    short = "L:1/8\nK:G\nGABc d2e2|d2B2 G4|]\n"
    long = _piece_with_patches(300)
    one = FeatureExtractor(model, mode="m3", batch_size=1).embed([short, long])
    many = FeatureExtractor(model, mode="m3", batch_size=8).embed([long, short])
    np.testing.assert_allclose(one, many[::-1], atol=1e-5)
    prompted = FeatureExtractor(model, mode="m3").embed(["%Romantic\n%Chopin, Frederic\n%Keyboard\n%end\n" + short])
    np.testing.assert_allclose(prompted[0], one[0], atol=1e-6)


def test_clamp2_mode_projects_and_m3_mode_does_not(model):
    text = "L:1/8\nK:D\nd2fa g2e2|f4 d4|]\n"
    m3 = FeatureExtractor(model, mode="m3").embed([text])[0]
    clamp = FeatureExtractor(model, mode="clamp2").embed([text])[0]
    patches = torch.tensor(M3Patchilizer(64, 128).encode(text, add_special_patches=True)).unsqueeze(0)
    with torch.no_grad():
        pooled = model.pooled(patches, torch.ones(patches.shape[:2], dtype=torch.long), project=False)[0]
        projected = model.music_proj(pooled)
    np.testing.assert_allclose(m3, pooled.numpy(), atol=1e-5)
    np.testing.assert_allclose(clamp, projected.numpy(), atol=1e-5)
