"""Next-character sampling on the device, from float32 logits.

Two orders are offered:

* ``"reference"`` (default, what the official weights were tuned with): softmax → keep the top-k → keep the top-p
  prefix → temperature applied to the *surviving probabilities* as p^(1/T), renormalised.
* ``"standard"``: logits / T → softmax → top-k → top-p (what most LLM samplers do).

Top-p keeps the probability-sorted prefix up to and including the token whose cumulative probability first exceeds p.
Every step is a masked softmax over finite values, so NaN, ±inf or huge logits never produce a NaN distribution.

Randomness comes from per-piece `torch.Generator`s (`UniformStreams`): every piece draws its own uniforms in order and
a token is picked by inverse CDF, so a piece depends on its seed only, not on the other pieces in its batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from notagen.errors import ConfigError

SamplingOrder = Literal["reference", "standard"]


@dataclass(frozen=True)
class SamplingSettings:
    """How a character is drawn from the model's distribution. Defaults are the official inference settings."""

    temperature: float = 1.2
    top_k: int = 9
    """Keep the k most likely characters; 0 keeps all."""
    top_p: float = 0.9
    """Keep the smallest likely prefix whose mass exceeds p; 1 keeps all."""
    order: SamplingOrder = "reference"
    strict: bool = True
    """Strict decoding (notagen.generation.constraints): only characters that keep the piece valid by every rule
    of `notagen check` are sampled. On by default everywhere (generate, the studio, DPO); off, the model samples
    from its raw distribution, as the reference implementation does."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.order not in ("reference", "standard"):
            raise ConfigError(f"sampling order must be 'reference' or 'standard', got {self.order!r}")

    @property
    def greedy(self) -> bool:
        """top_k = 1 or temperature = 0: the most likely character, no randomness."""
        return self.top_k == 1 or self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sanitize_logits(logits: Tensor) -> Tensor:
    """float32 logits with NaN → -inf; rows holding +inf keep only those entries; all -inf rows become uniform."""
    logits = logits.float()
    if bool(torch.isfinite(logits).all()):
        return logits
    logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    pos_inf = torch.isposinf(logits)
    if bool(pos_inf.any()):
        rows = pos_inf.any(dim=-1, keepdim=True)
        logits = torch.where(rows, torch.where(pos_inf, 0.0, float("-inf")), logits)
    dead = torch.isneginf(logits).all(dim=-1, keepdim=True)
    if bool(dead.any()):
        logits = torch.where(dead, torch.zeros_like(logits), logits)
    return logits


def _masked_softmax(scores: Tensor, keep: Tensor) -> Tensor:
    """Softmax over the kept entries only (kept entries are finite or the row is guaranteed one finite entry)."""
    scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1)


def filtered_distribution(logits: Tensor, settings: SamplingSettings) -> tuple[Tensor, Tensor]:
    """The sampling distribution of each row, restricted to its survivors.

    logits: [B, V]. Returns (probs [B, K], ids [B, K]): candidates sorted by decreasing model probability, with
    probability 0 for those removed by top-p; each row sums to 1.
    """
    logits = sanitize_logits(logits)
    vocab = logits.size(-1)
    logits = logits - logits.max(dim=-1, keepdim=True).values  # best = 0: no overflow below
    if settings.order == "standard" and settings.temperature > 0:
        logits = logits / settings.temperature
    k = vocab if settings.top_k == 0 else min(settings.top_k, vocab)
    values, ids = torch.topk(logits, k, dim=-1, sorted=True)
    # Probabilities of the k candidates, renormalised over them (the reference renormalises after top-k).
    finite = torch.isfinite(values)
    finite[:, 0] = True  # sanitize_logits guarantees the best one is finite
    probs = _masked_softmax(values, finite)
    keep = finite
    if settings.top_p < 1:
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely candidates
        keep = keep & (before <= settings.top_p)
        keep[:, 0] = True
    if settings.order == "reference" and settings.temperature > 0 and settings.temperature != 1:
        # p^(1/T) renormalised over the survivors, computed in log space (zeros stay excluded, never log(0)).
        log_probs = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
        probs = _masked_softmax(log_probs / settings.temperature, keep)
    else:
        probs = _masked_softmax(torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny)), keep)
    return probs, ids


def pick(probs: Tensor, ids: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF draw: the first candidate whose cumulative probability exceeds u (uniforms [B] in [0, 1))."""
    cumulative = torch.cumsum(probs, dim=-1)
    total = cumulative[:, -1:]
    index = (cumulative <= uniforms.unsqueeze(-1).to(probs.dtype) * total).sum(dim=-1, keepdim=True)
    index = index.clamp_max(probs.size(-1) - 1)
    # Never land on a zero-probability candidate because of rounding at the top end.
    index = torch.minimum(index, (probs > 0).sum(dim=-1, keepdim=True) - 1)
    return ids.gather(-1, index).squeeze(-1)


def sample(logits: Tensor, settings: SamplingSettings, uniforms: Tensor | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Draw one id per row of `logits` [B, V] → [B] (long, on the logits' device).

    Greedy settings take the argmax. Otherwise `uniforms` [B] (one per row) drive the draw; without them they are
    drawn from `generator`.
    """
    if settings.greedy:
        return sanitize_logits(logits).argmax(dim=-1)
    probs, ids = filtered_distribution(logits, settings)
    if uniforms is None:
        uniforms = torch.rand(probs.size(0), generator=generator, device=probs.device)
    return pick(probs, ids, uniforms)


class UniformStreams:
    """One seeded `torch.Generator` per piece, read in order in blocks, so draws do not depend on the batch.

    `take(rows)` returns the next uniform of each listed stream; streams not listed do not advance.
    """

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu", block: int = 256) -> None:
        self.device = torch.device(device)
        self.block = block
        self.generators: list[torch.Generator] = []
        self.buffers: list[Tensor] = []
        self.positions: list[int] = []
        for seed in seeds:
            self.add(seed)

    def add(self, seed: int) -> int:
        """Append a stream for a new piece; returns its index."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed))
        self.generators.append(generator)
        self.buffers.append(torch.rand(self.block, generator=generator, device=self.device))
        self.positions.append(0)
        return len(self.generators) - 1

    def take(self, streams: list[int]) -> Tensor:
        """Next uniform of each stream in `streams` → [len(streams)] on the device."""
        values = []
        for stream in streams:
            if self.positions[stream] == self.block:
                self.buffers[stream] = torch.rand(self.block, generator=self.generators[stream],
                                                  device=self.device)
                self.positions[stream] = 0
            values.append(self.buffers[stream][self.positions[stream]])
            self.positions[stream] += 1
        return torch.stack(values) if values else torch.empty(0, device=self.device)
