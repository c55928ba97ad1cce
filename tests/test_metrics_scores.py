"""ACS, label-accuracy probes, validity/BAE and perplexity."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from notagen.encoder.corpus import music21_tunes
from notagen.encoder.features import FeatureExtractor
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.metrics.scores import (
    LinearProbe,
    acs,
    centroids,
    cosine,
    nearest_cosine,
    perplexity,
    standard_error,
    validity,
)
from notagen.prompt import prompt_key


def _without_meter(text: str) -> str:
    return re.sub(r"^M:.*\n", "", text, flags=re.M)


@pytest.fixture(scope="module")
def reels_and_jigs():
    """Features of 50 real reels and 50 real 6/8 jigs (Ryan's Mammoth), M: lines removed, from a RANDOM-INIT tiny
    encoder: the separation comes from surface statistics (bar lengths, characters), so what is tested is the ACS
    and probe machinery on real data, not the quality of a trained encoder."""
    reels = music21_tunes("ryansMammoth", rhythm="reel", limit=50)
    jigs = [p for p in music21_tunes("ryansMammoth", rhythm="jig") if p.labels["meter"].replace(" ", "") == "6/8"]
    torch.manual_seed(0)
    extractor = FeatureExtractor(M3Model(EncoderConfig.preset("tiny"), with_decoder=False), batch_size=16)
    return (extractor.embed([_without_meter(p.text) for p in reels]),
            extractor.embed([_without_meter(p.text) for p in jigs[:50]]))


def test_acs_held_out_pieces_score_higher_against_their_own_group(reels_and_jigs):
    reels, jigs = reels_and_jigs
    reference = np.concatenate([reels[:40], jigs[:40]])
    groups = ["reel"] * 40 + ["jig"] * 40
    for name, other, held in (("reel", "jig", reels[40:]), ("jig", "reel", jigs[40:])):
        own = acs(held, [name] * 10, reference, groups)
        wrong = acs(held, [other] * 10, reference, groups)
        assert own.mean > wrong.mean
        assert np.mean(np.array(own.scores) > np.array(wrong.scores)) >= 0.8
        assert own.fallbacks == 0 and own.per_prompt[name]["reference_n"] == 40
        # The baseline: the other group's real pieces against this group's centroid, computed by hand.
        others = reference[40:] if name == "reel" else reference[:40]
        centroid = (reference[:40] if name == "reel" else reference[40:]).mean(0)
        assert own.per_prompt[name]["other_prompts_n"] == 40
        assert own.other_prompts_mean == pytest.approx(cosine(others, centroid).mean())
        assert own.mean > own.other_prompts_mean
        # The standard error of the mean: sample standard deviation / sqrt(n), overall and per prompt.
        assert own.se == pytest.approx(np.std(own.scores, ddof=1) / np.sqrt(10))
        assert own.per_prompt[name]["se"] == pytest.approx(own.se) and own.se > 0
    # An unknown prompt falls back to the global centroid, and is counted.
    unknown = acs(reels[40:], [None] * 10, reference, groups)
    assert unknown.fallbacks == 10 and set(unknown.centroid_used) == {"global"}
    np.testing.assert_allclose(unknown.scores, cosine(reels[40:], reference.mean(0)), atol=1e-12)


def test_standard_error():
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.sqrt(5 / 3) / 2)
    assert standard_error([0.5, 0.5]) == 0.0
    assert np.isnan(standard_error([0.5])) and np.isnan(standard_error([]))


def test_centroid_is_the_plain_mean_of_unnormalised_features():
    features = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    groups = centroids(features, ["a", "a", "b"], min_group=2)
    assert list(groups) == ["a"] and np.allclose(groups["a"], [2.0, 0.0])
    assert prompt_key({"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}) \
        == "Baroque | Bach, Johann Sebastian | Choral"
    assert prompt_key({"period": "Baroque"}) is None


def test_linear_probe_on_real_features(reels_and_jigs):
    reels, jigs = reels_and_jigs
    probe = LinearProbe.fit(np.concatenate([reels[:40], jigs[:40]]), ["reel"] * 40 + ["jig"] * 40)
    assert probe.train_accuracy >= 0.95
    held_accuracy = probe.accuracy(np.concatenate([reels[40:], jigs[40:]]), ["reel"] * 10 + ["jig"] * 10)
    assert held_accuracy >= 0.8
    assert np.isnan(probe.accuracy(reels[:2], [None, None]))


VALID = "L:1/8\nM:4/4\nK:C\nV:1\nV:2\n[V:1]cdef gabc'|[V:2]C,8|\n[V:1]c'8|][V:2]C,8|]\n"
MISALIGNED = "L:1/8\nM:4/4\nK:C\nV:1\nV:2\n[V:1]cdef gabc'|[V:2]C,8|\n[V:1]c'6|][V:2]C,8|]\n"


def test_validity_and_bae():
    summary = validity([VALID, MISALIGNED, "%Baroque\n%end\n" + VALID], names=["ok", "bad", "prompted"])
    assert summary.n == 3 and summary.valid_rate == pytest.approx(2 / 3)
    assert summary.bars == 6 and summary.bae == pytest.approx(1 / 6)
    assert [f["name"] for f in summary.failures] == ["bad"]


def test_perplexity_of_a_tiny_notagen_model():
    from notagen.config import ModelConfig
    from notagen.model import NotaGenModel
    from notagen.patchilizer import Patchilizer

    torch.manual_seed(0)
    model = NotaGenModel(ModelConfig.preset("tiny"))
    patchilizer = Patchilizer(patch_size=16, patch_length=64)
    texts = ["%Baroque\n%end\n" + VALID, VALID.replace("cdef", "edcB")]
    result = perplexity(model, texts, patchilizer)
    assert result.n == 2 and result.chars > 50
    assert 1.0 < result.perplexity < 200  # untrained over a 128-symbol vocabulary
    # A single piece: the model's own mean loss is the per-character NLL.
    single = perplexity(model, texts[:1], patchilizer)
    patches = torch.tensor(patchilizer.encode_train(texts[0])).unsqueeze(0)
    with torch.no_grad():
        loss = model(patches, torch.ones(patches.shape[:2], dtype=torch.long))
    assert single.nll_per_char == pytest.approx(float(loss), rel=1e-5)


def test_nearest_cosine_matches_the_row_wise_cosine():
    rng = np.random.default_rng(0)
    features, reference = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    largest, nearest = nearest_cosine(features, reference)
    for row, value, index in zip(features, largest, nearest):
        similarity = cosine(reference, row)
        assert index == int(np.argmax(similarity)) and value == pytest.approx(similarity.max())
    largest, nearest = nearest_cosine(reference[2:3] * 3.0, reference)  # a scaled copy is its own nearest piece
    assert nearest[0] == 2 and largest[0] == pytest.approx(1.0)
