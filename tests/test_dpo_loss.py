"""DPOP loss: its value, the penalty's one-sidedness, and one optimisation step on a tiny model."""

import copy
import math
import random

import pytest
import torch

from notagen.config import ModelConfig
from notagen.dpo.loss import dpop_loss
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer
from notagen.train.core import collate

CHOSEN = "%Baroque\n%Bach\n%Choral\n%end\nL:1/8\nM:4/4\nK:G\nV:1 treble\n[V:1]GABc d2e2|\n[V:1]d2B2 G4|\n"
REJECTED = "%Baroque\n%Bach\n%Choral\n%end\nL:1/8\nM:4/4\nK:G\nV:1 treble\n[V:1]^F_B,z3 c'|\n[V:1]=e/e/g7|\n"


def test_beta_zero_gives_log_two():
    values = [torch.randn(5, dtype=torch.float64) * 50 for _ in range(4)]
    loss, metrics = dpop_loss(*values, beta=0.0, lam=10.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert metrics["margin"] == 0.0


def test_matches_the_formula():
    pw, pl, rw, rl = (torch.tensor([v], dtype=torch.float64) for v in (-10.0, -30.0, -12.0, -25.0))
    loss, metrics = dpop_loss(pw, pl, rw, rl, beta=0.1, lam=10.0)
    logit = 0.1 * ((-10 + 30) - (-12 + 25))  # policy_w above the reference: no penalty
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-logit))), rel=1e-12)
    assert metrics["penalty"] == 0.0 and metrics["accuracy"] == 1.0
    assert metrics["margin"] == pytest.approx(0.1 * 7)


def test_penalty_acts_only_when_the_policy_lowers_the_chosen_piece():
    ref_w, ref_l, pol_l = torch.tensor([-20.0]), torch.tensor([-20.0]), torch.tensor([-25.0])
    above = torch.tensor([-18.0])  # policy gives the chosen piece more than the reference
    assert dpop_loss(above, pol_l, ref_w, ref_l, lam=10.0)[0] == dpop_loss(above, pol_l, ref_w, ref_l, lam=0.0)[0]
    below = torch.tensor([-21.0], requires_grad=True)  # less than the reference: penalised
    with_penalty, metrics = dpop_loss(below, pol_l, ref_w, ref_l, lam=10.0)
    without, _ = dpop_loss(below, pol_l, ref_w, ref_l, lam=0.0)
    assert with_penalty.item() > without.item()
    assert metrics["penalty"] == pytest.approx(1.0)
    (grad_with,) = torch.autograd.grad(with_penalty, below)
    (grad_without,) = torch.autograd.grad(without, below)
    assert grad_with.item() < grad_without.item() < 0  # the penalty pushes the chosen log-prob up harder


def _pair_batch():
    patchilizer = Patchilizer(patch_size=16, patch_length=64)
    return collate([patchilizer.encode_train(t, random.Random(0)) for t in (CHOSEN, REJECTED)], 16)


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_one_step_raises_chosen_relative_to_rejected(optimizer_name):
    """One step widens the (policy − reference) gap between the chosen and the rejected piece.

    Individually both log-probs may move the same way (they share the prompt and header, and to first order the
    rejected one falls only when g_w·g_l < |g_l|²); the margin grows by lr·c·|g_w − g_l|² ≥ 0 under SGD.
    """
    torch.manual_seed(0)
    policy = NotaGenModel(ModelConfig.preset("tiny", dropout=0.0)).double()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    patches, masks = _pair_batch()
    with torch.no_grad():
        ref = -reference(patches, masks, reduction="sequence")
    if optimizer_name == "adamw":
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=0.0)
    else:
        optimizer = torch.optim.SGD(policy.parameters(), lr=1e-4)
    logps = -policy(patches, masks, reduction="sequence")
    assert torch.allclose(logps, ref)  # identical weights: zero rewards
    loss, _ = dpop_loss(logps[0:1], logps[1:2], ref[0:1], ref[1:2], beta=0.1, lam=10.0)
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = -policy(patches, masks, reduction="sequence")
    assert after[0] > ref[0], "chosen log-prob should rise"
    assert (after[0] - ref[0]) > (after[1] - ref[1]), "chosen should gain on the rejected piece"
    new_loss, metrics = dpop_loss(after[0:1], after[1:2], ref[0:1], ref[1:2])
    assert new_loss.item() < math.log(2) and metrics["margin"] > 0 and metrics["penalty"] == 0.0
