"""The DPOP loss (Pal et al. 2024) as NotaGen's CLaMP-DPO uses it.

    L = −log σ( β·[(log πθ(w) − log πθ(l)) − (log πref(w) − log πref(l))] − β·λ·max(0, log πref(w) − log πθ(w)) )

w is the chosen piece, l the rejected one; log-probabilities are sums over every real target character. The
penalty keeps DPO from lowering the chosen piece's likelihood along with the rejected one's: it is zero while the
policy gives the chosen piece at least the reference's log-probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dpop_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
              beta: float = 0.1, lam: float = 10.0) -> tuple[Tensor, dict[str, float]]:
    """Mean DPOP loss over a batch of pairs, and detached diagnostics.

    All inputs are [B] sequence log-probabilities (the reference's without gradient). Metrics: `loss`,
    `chosen_reward` / `rejected_reward` (β · (policy − reference)), `margin` (their difference), `penalty`
    (mean max(0, ref_w − policy_w)), `accuracy` (share of pairs with a positive margin).
    """
    chosen_shift = policy_chosen - ref_chosen
    rejected_shift = policy_rejected - ref_rejected
    penalty = torch.clamp(ref_chosen - policy_chosen, min=0.0)
    logits = beta * (chosen_shift - rejected_shift) - beta * lam * penalty
    loss = -F.logsigmoid(logits).mean()
    with torch.no_grad():
        chosen_reward = beta * chosen_shift.detach()
        rejected_reward = beta * rejected_shift.detach()
        margin = chosen_reward - rejected_reward
        metrics = {
            "loss": float(loss.detach()),
            "chosen_reward": float(chosen_reward.mean()),
            "rejected_reward": float(rejected_reward.mean()),
            "margin": float(margin.mean()),
            "penalty": float(penalty.detach().mean()),
            "accuracy": float((margin > 0).double().mean()),
        }
    return loss, metrics


__all__ = ["dpop_loss"]
