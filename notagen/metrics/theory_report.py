"""The music-theory report of `notagen eval`: summaries per prompt, generated next to real pieces, the cache of real
baselines, the Markdown tables and the plot. The per-piece numbers come from `notagen.metrics.theory`.

Real-piece baselines (a dataset's eval split, per prompt) are cached per piece, keyed by the dataset's index and the
version of the code that computes the numbers, so that a report computes them once.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notagen.errors import PromptError
from notagen.io import atomic_write_json, content_hash
from notagen.metrics.theory import METRIC_KEYS, METRICS, analyse_text
from notagen.prompt import Prompt

# --- Sets of pieces -----------------------------------------------------------------------------------------------

@dataclass
class Summary:
    """Per metric: mean over the pieces that have a value, its standard error, N."""

    n_pieces: int
    errors: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    ensembles: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n_pieces": self.n_pieces, "errors": self.errors, "metrics": self.metrics,
                "ensembles": self.ensembles}


def summarise(results: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> Summary:
    from notagen.metrics.scores import standard_error

    summary = Summary(len(results))
    for index, result in enumerate(results):
        if "error" in result:
            summary.errors.append(f"{names[index] if names else index}: {result['error']}")
    ok = [r for r in results if "values" in r]
    for metric in METRIC_KEYS:
        values = [r["values"][metric] for r in ok if r["values"].get(metric) is not None]
        summary.metrics[metric] = {
            "mean": sum(values) / len(values) if values else None,
            "se": None if len(values) < 2 else standard_error(values),
            "n": len(values)}
    summary.ensembles = dict(Counter(r["detail"].get("ensemble", "?") for r in ok).most_common())
    return summary


CODE_VERSION_FILES = ("metrics/theory.py", "instruments.py", "convert.py")
"""The code behind the per-piece numbers (not this module: how a report is laid out changes no cached value)."""


def code_version() -> str:
    """A hash of the code that computes the numbers (and music21's version): a cache made by other code is stale."""
    import music21

    root = Path(__file__).resolve().parent.parent
    text = "".join((root / name).read_text(encoding="utf-8") for name in CODE_VERSION_FILES)
    return content_hash(text + music21.__version__)


def default_cache_dir() -> Path:
    """$NOTAGEN_CACHE, else $XDG_CACHE_HOME/notagen, else ~/.cache/notagen."""
    if os.environ.get("NOTAGEN_CACHE"):
        return Path(os.environ["NOTAGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "notagen"


class BaselineCache:
    """Per-piece results of real pieces of one dataset, in one JSON file `theory/DATASET-CODE.json` named by hashes
    of the dataset's index and of the code version; pieces are added as they are computed, so a report on other
    prompts reuses what was done. Saving removes the files of the same dataset made by other code versions."""

    def __init__(self, dataset: Path, cache_dir: Path | None = None) -> None:
        index = Path(dataset) / "index.jsonl"
        self.dataset_key = content_hash(index.read_bytes()) if index.is_file() else None
        self.folder = Path(cache_dir or default_cache_dir()) / "theory"
        self.path = self.folder / f"{self.dataset_key}-{code_version()}.json" if self.dataset_key else None
        self.entries: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8")).get("pieces", {})
            except (OSError, json.JSONDecodeError):
                self.entries = {}
        self.dataset = str(dataset)
        self.dirty = False

    def get(self, piece_id: str) -> dict[str, Any] | None:
        return self.entries.get(piece_id)

    def put(self, piece_id: str, result: dict[str, Any]) -> None:
        self.entries[piece_id] = result
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"dataset": self.dataset, "code_version": code_version(),
                                          "pieces": self.entries})
            for stale in self.folder.glob(f"{self.dataset_key}-*.json"):
                if stale != self.path:
                    stale.unlink(missing_ok=True)
        except OSError:
            return  # a read-only cache only costs time
        self.dirty = False


def real_pieces_by_prompt(reference: Path, prompts: Iterable[str], min_real: int = 5) -> dict[str, dict[str, Any]]:
    """For each prompt: the real pieces to compare with ({"pieces": [Piece], "source": "eval" | "eval+train"}).

    The dataset's eval split first; when it holds fewer than `min_real` pieces of the prompt, the prompt's train
    pieces are added (their split is named in the report)."""
    from notagen.data.dataset import read_index
    from notagen.encoder.corpus import is_dataset, load_pieces
    from notagen.prompt import prompt_key

    wanted = set(prompts)
    if not is_dataset(Path(reference)):
        pieces = load_pieces(reference, split=None)
        out = {p: {"pieces": [x for x in pieces if prompt_key(x.labels) == p], "source": "reference"}
               for p in wanted}
        return out
    records = [r for r in read_index(Path(reference)) if prompt_key(r.get("labels")) in wanted]
    eval_counts = Counter(prompt_key(r.get("labels")) for r in records if r.get("split") == "eval")
    need_train = {p for p in wanted if eval_counts.get(p, 0) < min_real}
    pieces = load_pieces(reference, split=None if need_train else "eval")
    out = {}
    for prompt in sorted(wanted):
        chosen = [p for p in pieces if prompt_key(p.labels) == prompt and
                  (p.split == "eval" or prompt in need_train)]
        out[prompt] = {"pieces": chosen, "source": "eval+train" if prompt in need_train else "eval"}
    return out


def real_baselines(reference: Path, prompts: Iterable[str], min_real: int = 5, cache_dir: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Per prompt: {"source", "results": [per-piece analyses], "names": [ids]} for the real pieces, from the cache
    where it has them."""
    from notagen.encoder.corpus import is_dataset

    cache = BaselineCache(Path(reference), cache_dir) if is_dataset(Path(reference)) else None
    out = {}
    try:
        for prompt, entry in real_pieces_by_prompt(Path(reference), prompts, min_real).items():
            results, names = [], []
            instrumentation = Prompt.parse(prompt).instrumentation if prompt else None
            for piece in entry["pieces"]:
                cached = cache.get(piece.id) if cache is not None else None
                if cached is None:
                    if progress:
                        progress(piece.id)
                    cached = analyse_text(piece.text, instrumentation)
                    if cache is not None:
                        cache.put(piece.id, cached)
                        if len(cache.entries) % 20 == 0:
                            cache.save()
                results.append(cached)
                names.append(piece.id)
            out[prompt] = {"source": entry["source"], "results": results, "names": names}
    finally:
        if cache is not None:
            cache.save()
    return out


# --- The report ---------------------------------------------------------------------------------------------------

def format_cell(entry: dict[str, Any], unit: str) -> str:
    """"47.0 ± 3.1 % (44)" for shares, "3.90 ± 0.52 (44)" for rates, "– (0)" when nothing applies."""
    mean, se, n = entry.get("mean"), entry.get("se"), entry.get("n", 0)
    if mean is None:
        return f"– ({n})"
    if unit == "share":
        text = f"{100 * mean:.1f}" + (f" ± {100 * se:.1f}" if se is not None and not math.isnan(se) else "") + " %"
    else:
        text = f"{mean:.2f}" + (f" ± {se:.2f}" if se is not None and not math.isnan(se) else "")
    return f"{text} ({n})"


def build_theory_report(generated: Sequence[Any], reference: Path | None, min_real: int = 5,
                  cache_dir: Path | None = None) -> dict[str, Any]:
    """Per prompt: generated and real summaries side by side, plus per-piece values of the generated pieces.

    `generated` are `notagen.metrics.evaluate.GeneratedFile`s (name, raw, text, labels)."""
    from notagen.prompt import prompt_key

    groups: dict[str, list[Any]] = {}
    for piece in generated:
        groups.setdefault(prompt_key(piece.labels) or "(no prompt)", []).append(piece)
    per_piece = []
    gen_results: dict[str, list[dict[str, Any]]] = {}
    for prompt, pieces in groups.items():
        for piece in pieces:
            result = analyse_text(piece.text, piece.labels.get("instrumentation"), piece.raw, piece.labels or None)
            gen_results.setdefault(prompt, []).append(result)
            per_piece.append({"name": piece.name, "prompt": prompt, **result})
    real = {}
    if reference is not None:
        real = real_baselines(reference, [p for p in groups if p != "(no prompt)"], min_real, cache_dir)
    prompts = {}
    for prompt in sorted(groups):
        names = [p.name for p in groups[prompt]]
        entry: dict[str, Any] = {"generated": summarise(gen_results[prompt], names).to_dict()}
        if prompt in real:
            entry["real"] = summarise(real[prompt]["results"], real[prompt]["names"]).to_dict()
            entry["real_source"] = real[prompt]["source"]
        prompts[prompt] = entry
    return {"metrics": [m.__dict__ for m in METRICS], "prompts": prompts, "per_piece": per_piece,
            "min_real": min_real, "code_version": code_version()}


def short_prompt(prompt: str) -> str:
    """"Bach / Choral" for "Baroque | Bach, Johann Sebastian | Choral" (composer's last name and instrumentation)."""
    try:
        return Prompt.parse(prompt).short()
    except PromptError:  # "(no prompt)"
        return prompt


def side_by_side(report: dict[str, Any]) -> list[str]:
    """One Markdown table of every prompt: a generated and a real column per prompt, each cell mean ± SE (N)."""
    prompts = list(report["prompts"])
    header = "| metric | " + " | ".join(f"{short_prompt(p)}: generated | {short_prompt(p)}: real"
                                        for p in prompts) + " |"
    lines = [header, "|---" * (1 + 2 * len(prompts)) + "|"]
    for metric in METRICS:
        cells = []
        for prompt in prompts:
            entry = report["prompts"][prompt]
            for side in ("generated", "real"):
                cells.append(format_cell(entry.get(side, {}).get("metrics", {}).get(metric.key, {"n": 0}),
                                         metric.unit))
        if any(not cell.startswith("– ") for cell in cells):
            lines.append(f"| {metric.label} | " + " | ".join(cells) + " |")
    sources = "; ".join(f"{short_prompt(p)}: {e.get('real_source', 'none')}" for p, e in report["prompts"].items())
    return lines + ["", f"Real pieces from: {sources}."]


def theory_markdown(report: dict[str, Any]) -> list[str]:
    """The report's Markdown section: all prompts side by side (2 to 4 prompts), then one table per prompt,
    generated | real, each cell mean ± SE (N), with the ensembles written and the pieces that could not be read."""
    lines = ["## Music theory", "",
             "Each cell: mean ± standard error (N pieces with a value); shares in %, rates per 100 beats or notes. "
             "Generated and real pieces are converted, parsed and measured by the same code "
             "(`notagen/metrics/theory.py`; definitions in docs/evaluation.md).", ""]
    if 2 <= len(report["prompts"]) <= 4:
        lines += side_by_side(report) + [""]
    for prompt, entry in report["prompts"].items():
        gen = entry["generated"]
        real = entry.get("real")
        source = {"eval": "real held-out (eval split)",
                  "eval+train": f"real (eval + train: fewer than {report['min_real']} held out)",
                  "reference": "real (reference)"}.get(entry.get("real_source", ""), "real")
        lines += [f"### {prompt.replace('|', '/')}", "",
                  f"Generated: {gen['n_pieces']} pieces" + (f" ({len(gen['errors'])} not analysable)"
                                                           if gen["errors"] else "") +
                  (f"; {source}: {real['n_pieces']} pieces" if real else "; no real pieces of this prompt") + ".",
                  "", f"| metric | generated | {source if real else 'real'} |", "|---|---|---|"]
        for metric in METRICS:
            g = gen["metrics"][metric.key]
            r = real["metrics"][metric.key] if real else {"mean": None, "n": 0}
            if g["n"] == 0 and r.get("n", 0) == 0:
                continue
            lines.append(f"| {metric.label} | {format_cell(g, metric.unit)} | {format_cell(r, metric.unit)} |")
        ensembles = ", ".join(f"{name} {count}" for name, count in gen["ensembles"].items())
        real_ensembles = ", ".join(f"{name} {count}" for name, count in real["ensembles"].items()) if real else "–"
        lines += ["", f"Ensembles written: generated — {ensembles or '–'}; real — {real_ensembles}.", ""]
        errors = gen["errors"] + (real["errors"] if real else [])
        if errors:
            lines += ["Not analysable: " + "; ".join(errors[:5]) + (" …" if len(errors) > 5 else ""), ""]
    return lines


def theory_plot(report: dict[str, Any], out: Path, name: str = "theory.png") -> str | None:
    """Per-metric bars, generated vs real, per prompt, with standard-error whiskers; returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    prompts = list(report["prompts"])
    shown = [m for m in METRICS if any(report["prompts"][p]["generated"]["metrics"][m.key]["n"] or
                                       report["prompts"][p].get("real", {}).get("metrics", {}).get(m.key, {})
                                       .get("n") for p in prompts)]
    if not prompts or not shown:
        return None
    columns = 3
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.6 * rows + 0.8), squeeze=False)
    short = [short_prompt(p) for p in prompts]
    x = np.arange(len(prompts))
    for ax, metric in zip(axes.flat, shown):
        scale = 100.0 if metric.unit == "share" else 1.0
        top = 0.0
        for offset, side, colour in ((-0.2, "generated", "tab:orange"), (0.2, "real", "tab:blue")):
            means, errors = [], []
            for prompt in prompts:
                entry = report["prompts"][prompt].get(side, {}).get("metrics", {}).get(metric.key, {})
                mean, se = entry.get("mean"), entry.get("se")
                means.append(np.nan if mean is None else mean * scale)
                errors.append(0.0 if se is None or (isinstance(se, float) and math.isnan(se)) else se * scale)
            ax.bar(x + offset, means, 0.4, yerr=errors, color=colour, label=side, capsize=2)
            for position, mean in zip(x + offset, means):  # the value on each bar: zero bars are invisible
                if not np.isnan(mean):
                    ax.annotate(f"{mean:.1f}" if scale > 1 or mean >= 10 else f"{mean:.2f}", (position, mean),
                                ha="center", va="bottom", fontsize=6, xytext=(0, 1), textcoords="offset points")
            top = max([top] + [m + e for m, e in zip(means, errors) if not np.isnan(m)])
        ax.set_ylim(0, 100 if metric.unit == "share" and top <= 0 else max(top * 1.15, 1e-3 if top else 1))
        ax.set_xlim(-0.6, len(prompts) - 0.4)
        ax.set_title(metric.label + (" (%)" if metric.unit == "share" else ""), fontsize=9)
        ax.set_xticks(x, short, fontsize=7, rotation=20, ha="right")
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=2)
    fig.suptitle("Music theory: generated vs real pieces of the same prompt (mean ± SE)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(Path(out) / name, dpi=100)
    plt.close(fig)
    return name


def pooled_mean(report: dict[str, Any], metric: str) -> float | None:
    """Mean of a metric over every generated piece of a theory report that has a value (all prompts together)."""
    values = [p["values"][metric] for p in report["per_piece"] if p.get("values", {}).get(metric) is not None]
    return sum(values) / len(values) if values else None
