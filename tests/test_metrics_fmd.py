"""FMD: zero on identical sets, symmetric, grows with perturbation (synthetic and real features)."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from notagen.encoder.corpus import music21_tunes
from notagen.encoder.features import FeatureExtractor
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.errors import MetricError
from notagen.metrics.fmd import covariance, fmd, fmd_inf


@pytest.mark.parametrize("estimator", ["mle", "shrinkage", "oas"])
def test_fmd_identity_symmetry_and_growth(estimator):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    y = rng.normal(size=(400, 16))
    assert abs(fmd(x, x, estimator).value) < 1e-6
    assert fmd(x, y, estimator).value == pytest.approx(fmd(y, x, estimator).value, rel=1e-6)
    values = [fmd(x, y + shift, estimator).value for shift in (0.0, 0.2, 0.5, 1.0)]
    assert values == sorted(values) and values[-1] > 10 * values[0]
    # A pure mean shift of size s in every one of d dimensions adds about d·s².
    assert fmd(x, x + 0.5, estimator).value == pytest.approx(16 * 0.25, rel=1e-6)
    result = fmd(x, y, estimator)
    assert (result.n_reference, result.n_test, result.dim, result.estimator) == (400, 400, 16, estimator)


def test_mle_matches_closed_form_for_diagonal_gaussians():
    # FMD of N(0, I) vs N(0, 4I) in d dims is d·(1 + 4 − 2·2) = d.
    sigma_r, sigma_t = np.eye(8), 4 * np.eye(8)
    from notagen.metrics.fmd import frechet_distance

    assert frechet_distance(np.zeros(8), sigma_r, np.zeros(8), sigma_t) == pytest.approx(8.0)


def test_bad_input_is_a_user_facing_error():
    with pytest.raises(MetricError, match="at least two pieces"):
        fmd(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(MetricError, match="do not match"):
        fmd(np.zeros((5, 4)), np.zeros((5, 3)))


def test_shrinkage_estimators_work_when_pieces_are_fewer_than_dimensions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.3
    for estimator in ("shrinkage", "oas"):
        cov = covariance(x, estimator)
        assert np.linalg.eigvalsh(cov).min() > 0  # well conditioned, unlike the rank-19 sample covariance
        assert np.isfinite(fmd(x, y, estimator).value)


def test_fmd_inf_recovers_the_large_sample_limit():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(3000, 4))
    test = rng.normal(size=(1500, 4)) + 1.0  # true FMD = 4
    result = fmd_inf(reference, test, steps=8, min_n=200)
    assert result.value == pytest.approx(4.0, abs=0.3)
    assert result.sizes[0] == 200 and result.sizes[-1] == 1500


def _corrupt(text: str, share: float, rng: random.Random) -> str:
    """Replace a share of the body's characters (barlines kept) with random ABC characters."""
    lines = []
    for line in text.splitlines():
        if re.match(r"^[A-Za-z]:", line):
            lines.append(line)
            continue
        lines.append("".join(rng.choice("ABCDEFGabcdefgz,'/23468 ^_=()") if c != "|" and rng.random() < share
                             else c for c in line))
    return "\n".join(lines) + "\n"


def test_fmd_grows_as_real_pieces_are_perturbed():
    # Random-init tiny encoder: it reacts to the character statistics, so only clear corruption levels are used
    # (at 20 % the change is within the 30-vs-30 sampling noise; measured 1.148 → 1.154).
    torch.manual_seed(0)
    extractor = FeatureExtractor(M3Model(EncoderConfig.preset("tiny"), with_decoder=False), batch_size=16)
    reels = music21_tunes("ryansMammoth", rhythm="reel", limit=60)
    reference = extractor.embed([p.text for p in reels[:30]])
    held = [p.text for p in reels[30:]]
    rng = random.Random(0)
    values = [fmd(reference, extractor.embed([_corrupt(t, share, rng) for t in held]), "oas").value
              for share in (0.0, 0.5, 1.0)]
    assert values[0] < values[1] < values[2]
    assert values[2] > 1.4 * values[0]
