"""Which prompts earn their place in a model's registry: judged on a `notagen eval` report of its pieces.

A prompt is kept when, over its generated pieces, the period and instrumentation probes (linear probes on the
encoder's features, trained on the real reference) give its own label to at least `min_probe` of them, the
music-theory report finds the prompt's instrumentation in at least `min_fit` of them (single-line tunes, which have
no ensemble in real pieces either, are not tested on it), every one is strict-valid, at least `min_distinct` of
their 4-bar melodic patterns are distinct, and they are flagged as memorised no more often than the real held-out
pieces of the prompt (against the same training pieces; not tested when the report has no real held-out pieces).
The composer probe is recorded but does not decide: real held-out pieces of one period and instrumentation are often
told apart no better by it.
"""

from __future__ import annotations

from typing import Any

from notagen.prompt import Prompt

DECIDING_PROBES = ("period", "instrumentation")


def decisions(report: dict[str, Any], min_probe: float, min_fit: float,
              min_distinct: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per prompt key: the numbers and whether the prompt is kept (with the reasons when it is not)."""
    probes = report.get("label_accuracy", {})
    theory = report.get("theory", {}).get("prompts", {})
    memorised = report.get("memorisation", {}).get("per_prompt", {})
    valid: dict[str, list[bool]] = {}
    for piece in report.get("per_piece", []):
        key = piece.get("prompt")  # the report's "period | composer | instrumentation"
        if key:
            valid.setdefault(str(Prompt.parse(key)), []).append(bool(piece.get("valid")))
    out = {}
    for key, flags in valid.items():
        row: dict[str, Any] = {"n": len(flags), "valid": sum(flags) / len(flags)}
        reasons = []
        for label in (*DECIDING_PROBES, "composer"):
            value = probes.get(label, {}).get("per_prompt", {}).get(key, {}).get("la")
            row[f"probe_{label}"] = value
            if label in DECIDING_PROBES and (value is None or value < min_probe):
                reasons.append(f"{label} probe {value if value is None else round(value, 2)} < {min_probe}")
        sides = theory.get(key, {})
        fit = sides.get("generated", {}).get("metrics", {}).get("instrumentation_fit", {}).get("mean")
        real_fit = sides.get("real", {}).get("metrics", {}).get("instrumentation_fit", {}).get("mean")
        row["instrumentation_fit"] = fit
        # A single-line tune has no ensemble to fit (neither its pieces nor the real ones get a value): no test.
        if (fit is None and real_fit is not None) or (fit is not None and fit < min_fit):
            reasons.append(f"instrumentation fit {fit if fit is None else round(fit, 2)} < {min_fit}")
        if row["valid"] < 1:
            reasons.append(f"strict-valid {row['valid']:.2f} < 1")
        distinct = sides.get("generated", {}).get("metrics", {}).get("distinct_patterns", {}).get("mean")
        row["distinct_patterns"] = distinct
        if distinct is not None and distinct < min_distinct:
            reasons.append(f"distinct 4-bar patterns {distinct:.2f} < {min_distinct}")
        copied = memorised.get(key, {})
        row["memorised"] = copied.get("flagged_share")
        row["real_memorised"] = copied.get("real_flagged_share")
        if row["memorised"] is not None and row["real_memorised"] is not None \
                and row["memorised"] > row["real_memorised"]:
            reasons.append(f"memorised {row['memorised']:.2f} > real held-out {row['real_memorised']:.2f}")
        row["kept"] = not reasons
        row["reasons"] = reasons
        out[key] = row
    return out


__all__ = ["DECIDING_PROBES", "decisions"]
