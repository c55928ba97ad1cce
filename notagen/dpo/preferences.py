"""Chosen and rejected pieces per prompt (as NotaGen's CLaMP-DPO picks them, with the reference's gaps closed).

Per prompt the candidates are ranked by their CLaMP score (cosine to the prompt's reference centroid). With
`threshold = max(1, int(N · portion))`, capped at N // 2:

* **chosen**: walking down the ranking, the first `threshold` pieces that pass every filter — bar alignment (the
  validity check: abc2xml reads it, every voice has the same bars, every bar's voices have the same duration),
  instrument grouping (the staves of one instrument are contiguous) and no plagiarism (encoder cosine above the
  limit to any single reference piece, or a copied run of bars found by the memorisation index);
* **rejected**: the last `threshold` pieces, unfiltered as in the reference, never a chosen piece and always
  scored strictly below every chosen one (a tie carries no preference).

The reference lets a piece be both chosen and rejected at tiny N and gives no pair at all for N < 10; here the
chosen walk never enters the rejected tail, and N ≥ 2 always yields at least one pair unless filters empty it.
Every candidate gets a status and, when excluded, the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_VOICE_LINE = re.compile(r"^V:\s*(\S+)(.*)$")
_NAME = re.compile(r'\bnm\s*=\s*"([^"]*)"')


def instrument_names(abc: str) -> list[tuple[str, str]]:
    """(voice id, instrument name) of every header `V:` line that names one with `nm="…"`, in order."""
    found = []
    for line in abc.splitlines():
        match = _VOICE_LINE.match(line)
        if match:
            name = _NAME.search(match.group(2))
            if name and name.group(1).strip():
                found.append((match.group(1), name.group(1).strip()))
    return found


def instrument_grouping_problem(abc: str) -> str | None:
    """Why the staves of one instrument are not contiguous (a name reappearing after another), or None."""
    seen: list[str] = []
    for voice, name in instrument_names(abc):
        key = name.casefold()
        if seen and seen[-1] == key:
            continue
        if key in seen:
            return f"instrument {name!r} (V:{voice}) reappears after another instrument"
        seen.append(key)
    return None


@dataclass(frozen=True)
class PreferenceFilters:
    """Which filters a chosen piece must pass, and their limits."""

    alignment: bool = True
    grouping: bool = True
    plagiarism: bool = True
    plagiarism_cosine: float = 0.95
    """Exclude a piece whose encoder cosine to any single reference piece exceeds this."""


def calibrate_plagiarism_cosine(reference: Any, held_out: Any, percentile: float = 95.0) -> float:
    """The `percentile` of real held-out pieces' largest cosine to a single reference piece.

    A fixed limit only means something for one encoder (0.95 is the paper's, for CLaMP 2; a small encoder puts
    every piece of a style above it). Calibrated on unseen real music, a generated piece counts as a copy only when
    it sits closer to one reference piece than `percentile` % of real pieces the model never saw.
    """
    import numpy as np

    from notagen.metrics.scores import nearest_cosine

    if np.size(reference) == 0 or np.size(held_out) == 0:
        raise ValueError("calibration needs reference and held-out features")
    return float(np.percentile(nearest_cosine(held_out, reference)[0], percentile))


def sample_problem(facts: Mapping[str, Any], filters: PreferenceFilters = PreferenceFilters()) -> str | None:
    """The first filter a scored sample fails, as a one-line reason, or None.

    `facts` are the per-sample entries of scores.json: `valid` and `error` (validity), `grouping` (a grouping
    problem or None), `max_reference_cosine` and `nearest_reference`, `memorised` and `memorised_run`.
    """
    if filters.alignment and not facts.get("valid", False):
        return f"bar alignment: {facts.get('error') or 'invalid'}"
    if filters.grouping and facts.get("grouping"):
        return f"instrument grouping: {facts['grouping']}"
    if filters.plagiarism:
        cosine = facts.get("max_reference_cosine")
        if cosine is not None and cosine > filters.plagiarism_cosine:
            return (f"plagiarism: cosine {cosine:.4f} > {filters.plagiarism_cosine} to reference "
                    f"{facts.get('nearest_reference')}")
        if facts.get("memorised"):
            run = facts.get("memorised_run") or {}
            return f"plagiarism: copies {run.get('bars', '?')} bars of reference {run.get('piece', '?')}"
    return None


@dataclass
class PromptPreferences:
    """The selection for one prompt: ranking, chosen, rejected, and every candidate's status."""

    prompt: str
    n: int
    threshold: int
    chosen: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """By rank: {"name", "score", "rank", "status": chosen|rejected|excluded, "reason"}."""
    note: str | None = None
    """Why the prompt has no pairs, if it has none."""

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (chosen, rejected) combination."""
        return [(w, lo) for w in self.chosen for lo in self.rejected]

    @property
    def excluded(self) -> dict[str, str]:
        return {c["name"]: c["reason"] for c in self.candidates if c["status"] == "excluded"}

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "n": self.n, "threshold": self.threshold, "chosen": self.chosen,
                "rejected": self.rejected, "pairs": len(self.pairs), "note": self.note,
                "candidates": self.candidates}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptPreferences:
        return cls(str(data["prompt"]), int(data["n"]), int(data["threshold"]), list(data["chosen"]),
                   list(data["rejected"]), list(data.get("candidates", [])), data.get("note"))


def select_preferences(scores: Mapping[str, float] | Sequence[tuple[str, float]], portion: float = 0.1,
                       problems: Mapping[str, str | None] | None = None, prompt: str = "") -> PromptPreferences:
    """Chosen and rejected pieces of one prompt from their scores (see the module docstring).

    `problems[name]` is the reason a piece may not be chosen (None or absent: it may); pieces with a non-finite
    score are excluded outright.
    """
    if not 0 < portion <= 0.5:
        raise ValueError(f"portion must be in (0, 0.5], got {portion}")
    items = list(scores.items()) if isinstance(scores, Mapping) else list(scores)
    problems = problems or {}
    status: dict[str, dict[str, Any]] = {}
    ranked = []
    for name, score in items:
        if score is None or not math.isfinite(score):
            status[name] = {"name": name, "score": None, "rank": None, "status": "excluded", "reason": "no score"}
        else:
            ranked.append((name, float(score)))
    ranked.sort(key=lambda item: (-item[1], item[0]))  # ties broken by name: the same files give the same pairs
    n = len(ranked)
    threshold = min(max(1, int(n * portion)), n // 2)
    result = PromptPreferences(prompt, n, threshold)
    for rank, (name, score) in enumerate(ranked):
        status[name] = {"name": name, "score": score, "rank": rank, "status": "excluded", "reason": None}
    if n < 2:
        result.note = f"{n} scored candidate(s): a pair needs at least 2"
    else:
        tail_start = n - threshold  # the rejected tail; the chosen walk never enters it
        for name, _ in ranked[:tail_start]:
            if len(result.chosen) == threshold:
                status[name]["reason"] = "below the chosen pieces"
                continue
            problem = problems.get(name)
            if problem:
                status[name]["reason"] = problem
            else:
                result.chosen.append(name)
                status[name].update(status="chosen")
        lowest_chosen = min((status[name]["score"] for name in result.chosen), default=None)
        for name, score in ranked[tail_start:]:
            if lowest_chosen is None:
                status[name]["reason"] = "no chosen piece to pair with"
            elif score >= lowest_chosen:
                status[name]["reason"] = "scores as high as a chosen piece"
            else:
                result.rejected.append(name)
                status[name].update(status="rejected")
        if not result.chosen:
            result.note = "every candidate above the rejected tail failed a filter"
        elif not result.rejected:
            result.note = "no rejected piece scores below the chosen ones"
    for entry in status.values():
        if entry["status"] == "excluded" and entry["reason"] is None:
            entry["reason"] = "not selected"
    result.candidates = sorted(status.values(), key=lambda e: (e["rank"] is None, e["rank"] or 0, e["name"]))
    return result


def pairs_by_prompt(selections: Sequence[PromptPreferences]) -> dict[str, list[tuple[str, str]]]:
    """Prompt → its (chosen, rejected) pairs, for the prompts that have any."""
    return {s.prompt: s.pairs for s in selections if s.pairs}


__all__ = ["PreferenceFilters", "PromptPreferences", "instrument_grouping_problem", "instrument_names",
           "pairs_by_prompt", "sample_problem", "select_preferences"]
