"""Sampling: top-k, top-p, temperature orders, numerical safety, per-piece streams."""

import math

import pytest
import torch

from notagen.errors import ConfigError
from notagen.generation.sampling import (
    SamplingSettings,
    UniformStreams,
    filtered_distribution,
    pick,
    sample,
    sanitize_logits,
)


def dist(logits, **settings):
    probs, ids = filtered_distribution(torch.tensor([logits], dtype=torch.float32), SamplingSettings(**settings))
    return {int(i): float(p) for p, i in zip(probs[0], ids[0]) if p > 0}


def test_top_k_keeps_exactly_k_most_likely():
    logits = [0.0, 3.0, 1.0, 2.0, -1.0]
    kept = dist(logits, top_k=3, top_p=1.0, temperature=1.0)
    assert set(kept) == {1, 3, 2}
    softmax = torch.softmax(torch.tensor([3.0, 2.0, 1.0]), 0)
    assert [kept[1], kept[3], kept[2]] == pytest.approx(softmax.tolist(), rel=1e-5)


def test_top_p_keeps_prefix_up_to_the_token_that_exceeds_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().tolist()
    assert set(dist(logits, top_k=0, top_p=0.4, temperature=1.0)) == {0}
    assert set(dist(logits, top_k=0, top_p=0.5, temperature=1.0)) == {0, 1}  # 0.5 does not exceed 0.5, 0.8 does
    assert set(dist(logits, top_k=0, top_p=0.6, temperature=1.0)) == {0, 1}  # 0.8 is the first above 0.6
    assert set(dist(logits, top_k=0, top_p=0.85, temperature=1.0)) == {0, 1, 2}
    kept = dist(logits, top_k=0, top_p=0.6, temperature=1.0)
    assert kept[0] == pytest.approx(0.5 / 0.8) and kept[1] == pytest.approx(0.3 / 0.8)


def test_reference_order_applies_temperature_after_truncation():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().tolist()
    temperature = 2.0
    kept = dist(logits, top_k=3, top_p=0.6, temperature=temperature, order="reference")
    # survivors {0, 1} renormalised, then p^(1/T) renormalised over the survivors only
    a, b = (0.5 / 0.8) ** (1 / temperature), (0.3 / 0.8) ** (1 / temperature)
    assert kept == pytest.approx({0: a / (a + b), 1: b / (a + b)})


def test_standard_order_applies_temperature_before_truncation():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().tolist()
    # at T = 3 the distribution flattens, so top-p 0.65 keeps three tokens instead of two
    flat = torch.softmax(probs.log() / 3, 0)
    expected = int((torch.cumsum(flat, 0) - flat <= 0.65).sum())
    kept = dist(logits, top_k=0, top_p=0.65, temperature=3.0, order="standard")
    assert len(kept) == expected == 3
    assert sum(kept.values()) == pytest.approx(1.0)
    reference = dist(logits, top_k=0, top_p=0.65, temperature=3.0, order="reference")
    assert len(reference) == 2


@pytest.mark.parametrize("order", ["reference", "standard"])
def test_never_nan_with_infinite_or_huge_logits(order):
    settings = SamplingSettings(temperature=0.7, top_k=5, top_p=0.9, order=order)
    rows = torch.tensor([
        [float("-inf")] * 8,
        [float("nan")] * 4 + [1.0] * 4,
        [float("inf"), 0.0, float("inf"), 1.0, 2.0, 3.0, 4.0, 5.0],
        [1e38, -1e38, 3e38, 0.0, 0.0, 0.0, 0.0, 0.0],
        [-1e30] * 8,
    ])
    probs, ids = filtered_distribution(rows, settings)
    assert not torch.isnan(probs).any()
    assert torch.allclose(probs.sum(-1), torch.ones(len(rows)))
    tokens = sample(rows, settings, generator=torch.Generator().manual_seed(0))
    assert tokens[1] >= 4  # NaN entries are never drawn
    assert tokens[2] in (0, 2)  # +inf entries take all the mass
    assert tokens[3] == 2
    assert torch.equal(sanitize_logits(rows[:1]), torch.zeros(1, 8))  # all -inf → uniform


def test_greedy_is_argmax_and_pick_follows_inverse_cdf():
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0]])
    assert sample(logits, SamplingSettings(top_k=1)).tolist() == [1, 0]
    assert sample(logits, SamplingSettings(temperature=0)).tolist() == [1, 0]
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    ids = torch.tensor([[7, 8, 9, 10]])
    assert [int(pick(probs, ids, torch.tensor([u]))[0]) for u in (0.0, 0.49, 0.5, 0.79, 0.8, 0.9999)] == \
        [7, 7, 8, 8, 9, 9]


def test_draws_follow_the_distribution():
    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20000, -1)
    tokens = sample(logits, settings, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(tokens, minlength=3).float() / len(tokens)
    assert freq.tolist() == pytest.approx([0.7, 0.2, 0.1], abs=0.015)


def test_streams_depend_on_their_own_seed_only():
    a = UniformStreams([5, 6], block=4)
    b = UniformStreams([6], block=4)
    first = [float(a.take([0, 1])[1]) for _ in range(10)]  # crosses block refills
    second = [float(b.take([0])[0]) for _ in range(10)]
    assert first == second
    c = UniformStreams([5, 6], block=4)
    skipped = [float(c.take([1])[0]) for _ in range(10)]  # stream 0 not read: stream 1 unchanged
    assert skipped == second
    assert all(0 <= u < 1 for u in first) and len(set(first)) == 10


def test_invalid_settings_are_config_errors():
    for bad in ({"temperature": -1}, {"top_k": -2}, {"top_p": 0}, {"top_p": 1.5}, {"order": "odd"}):
        with pytest.raises(ConfigError):
            SamplingSettings(**bad)
    assert math.isclose(SamplingSettings().top_p, 0.9)
