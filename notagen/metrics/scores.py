"""Per-set scores: ACS (CLaMP score against a prompt's reference centroid), label accuracy (linear probes), bar
alignment error and validity (from `check_abc`), and a language model's perplexity.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of a [N, d] with b [d] (or [N, d])."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def nearest_cosine(features: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `features` [N, d]: its largest cosine to a single row of `reference` [M, d], and that row."""
    a = np.asarray(features, np.float64)
    b = np.asarray(reference, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    similarity = a @ b.T
    nearest = similarity.argmax(axis=1)
    return similarity[np.arange(len(a)), nearest], nearest


# --- ACS ----------------------------------------------------------------------------------------------------------

@dataclass
class ACSResult:
    """Mean over pieces of cos(piece, centroid of its prompt's reference pieces); global centroid as fallback.

    `other_prompts_mean` is the baseline a model must beat: real reference pieces of *other* prompts scored against
    the same centroids (per prompt, then weighted like `mean` by the generated pieces' prompts; NaN when the
    reference has no labelled pieces of another prompt).
    """

    mean: float
    scores: list[float]
    centroid_used: list[str]  # the prompt key of the centroid each piece was scored against, or "global"
    per_prompt: dict[str, dict[str, float]]
    n: int
    n_reference: int
    fallbacks: int
    other_prompts_mean: float = float("nan")
    se: float = float("nan")
    """Standard error of `mean` over the pieces: two ACS values from independent samples whose difference is
    within about twice the combined error (√(se₁² + se₂²)) are not distinguishable."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / √n); NaN for fewer than two values."""
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def centroids(features: np.ndarray, keys: Sequence[str | None], min_group: int = 1) -> dict[str, np.ndarray]:
    """Plain mean of the un-normalised features of each group with at least `min_group` pieces."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return {k: np.asarray(features)[idx].mean(0) for k, idx in groups.items() if len(idx) >= min_group}


def acs(features: np.ndarray, prompts: Sequence[str | None], reference: np.ndarray,
        reference_prompts: Sequence[str | None], min_group: int = 1) -> ACSResult:
    """ACS of generated `features` (one prompt key per piece, None = unknown) against the reference set."""
    features, reference = np.asarray(features), np.asarray(reference)
    if len(features) == 0 or len(reference) == 0:
        raise ValueError("ACS needs generated and reference features")
    groups = centroids(reference, reference_prompts, min_group)
    global_centroid = reference.mean(0)
    counts: dict[str, int] = {}
    for key in reference_prompts:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    scores, used = [], []
    for vector, key in zip(features, prompts):
        target = key if key in groups else "global"
        used.append(target)
        scores.append(float(cosine(vector, groups[target] if target != "global" else global_centroid)))
    per_prompt: dict[str, dict[str, float]] = {}
    for key in sorted({str(p) for p in prompts}):
        values = [s for s, p in zip(scores, prompts) if str(p) == key]
        per_prompt[key] = {"n": len(values), "mean": float(np.mean(values)), "std": float(np.std(values)),
                           "se": standard_error(values),
                           "reference_n": counts.get(key, 0), "other_prompts_mean": float("nan"),
                           "other_prompts_n": 0}
        if key in groups:
            others = [i for i, k in enumerate(reference_prompts) if k is not None and k != key]
            if others:
                per_prompt[key]["other_prompts_mean"] = float(cosine(reference[others], groups[key]).mean())
                per_prompt[key]["other_prompts_n"] = len(others)
    weighted = [(entry["n"], entry["other_prompts_mean"]) for entry in per_prompt.values()
                if entry["other_prompts_mean"] == entry["other_prompts_mean"]]
    baseline = (sum(n * v for n, v in weighted) / sum(n for n, _ in weighted)) if weighted else float("nan")
    return ACSResult(float(np.mean(scores)), scores, used, per_prompt, len(scores), len(reference),
                     sum(u == "global" for u in used), baseline, standard_error(scores))


# --- label accuracy -----------------------------------------------------------------------------------------------

@dataclass
class LinearProbe:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS, L2-regularised)."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    train_accuracy: float = 0.0
    n_train: int = 0

    @classmethod
    def fit(cls, features: np.ndarray, labels: Sequence[str], l2: float = 1e-2, steps: int = 200) -> LinearProbe:
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError("a probe needs at least two classes")
        x = np.asarray(features, np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xt = torch.tensor((x - mean) / scale, dtype=torch.float64)
        yt = torch.tensor([classes.index(y) for y in labels])
        weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(xt @ weight + bias, yt) + l2 * (weight ** 2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        probe = cls(classes, mean, scale, weight.detach().numpy(), bias.detach().numpy(), n_train=len(labels))
        probe.train_accuracy = probe.accuracy(features, labels)
        return probe

    def predict(self, features: np.ndarray) -> list[str]:
        logits = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.weight + self.bias
        return [self.classes[i] for i in logits.argmax(-1)]

    def accuracy(self, features: np.ndarray, labels: Sequence[str | None]) -> float:
        """Share of pieces whose predicted label is the given one (pieces without a label are skipped)."""
        pairs = [(p, y) for p, y in zip(self.predict(features), labels) if y is not None]
        return sum(p == y for p, y in pairs) / len(pairs) if pairs else math.nan


# --- validity and BAE ---------------------------------------------------------------------------------------------

@dataclass
class ValiditySummary:
    n: int
    valid_rate: float
    parse_rate: float
    bae: float  # misaligned bars / bars over every piece that could be split into bars (a fraction, not %)
    bae_mean_per_piece: float
    bars: int
    failures: list[dict[str, str]] = field(default_factory=list)
    per_piece: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validity(texts: Sequence[str], names: Sequence[str] | None = None) -> ValiditySummary:
    """Validity rate and bar alignment error of a set of pieces, from `notagen.abc.check.check_abc`."""
    from notagen.abc.check import check_abc

    names = list(names) if names is not None else [str(i) for i in range(len(texts))]
    reports = []
    failures = []
    per_piece = []
    for name, text in zip(names, texts):
        report = check_abc(text)
        reports.append(report)
        per_piece.append({"name": name, "valid": report.valid, "bae": report.bae, "bars": report.bars})
        if not report.valid:
            failures.append({"name": name, "error": report.error or
                             f"{report.misaligned_bars} misaligned bars; bars per voice {report.bars_per_voice}"})
    bars = sum(r.bars for r in reports)
    n = len(reports)
    return ValiditySummary(
        n=n, valid_rate=sum(r.valid for r in reports) / n if n else math.nan,
        parse_rate=sum(r.parses for r in reports) / n if n else math.nan,
        bae=sum(r.misaligned_bars for r in reports) / bars if bars else math.nan,
        bae_mean_per_piece=float(np.mean([r.bae for r in reports if r.bars])) if bars else math.nan,
        bars=bars, failures=failures, per_piece=per_piece,
    )


# --- perplexity ---------------------------------------------------------------------------------------------------

@dataclass
class PerplexityResult:
    perplexity: float
    nll_per_char: float
    chars: int
    n: int


@torch.no_grad()
def perplexity(model: Any, texts: Sequence[str], encode: Callable[[str], list[list[int]]] | Any,
               device: str = "cpu") -> PerplexityResult:
    """exp(mean negative log-likelihood per predicted character) of a set of texts, from the model's own loss
    (`NotaGenModel.forward`, summed over every real target character).

    `encode` is a callable text → patches or a patchilizer with `encode_train` (used with a fixed crop seed, so
    long pieces give the same window every time).
    """
    from notagen.model import target_char_counts

    if hasattr(encode, "encode_train"):
        patchilizer = encode

        def encode(text: str) -> list[list[int]]:
            return patchilizer.encode_train(text, rng=random.Random(0))

    total_nll, total_chars = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for text in texts:
            patches = torch.tensor(encode(text), dtype=torch.long, device=device).unsqueeze(0)
            masks = torch.ones(patches.shape[:2], dtype=torch.long, device=device)
            total_nll += float(model(patches, masks, reduction="sum"))
            total_chars += int(target_char_counts(patches, masks).sum())
    finally:
        model.train(was_training)
    nll = total_nll / max(total_chars, 1)
    return PerplexityResult(math.exp(nll), nll, total_chars, len(texts))
