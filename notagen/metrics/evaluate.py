"""`notagen eval`: score a folder of generated pieces against a reference dataset.

Metrics: ACS per prompt (cosine to the prompt's reference centroid, global
centroid when the prompt has no reference pieces), FMD (with N and the covariance estimator), label accuracy of
linear probes for period and instrumentation trained on the reference features, validity rate and bar alignment
error, memorisation (longest run of bars copied from one training piece), and optionally a model's perplexity on
the reference's eval split. Every encoder-based number names the encoder, its weights hash and N.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from notagen.data.dataset import read_index
from notagen.encoder.corpus import Piece, is_dataset, load_pieces
from notagen.errors import ConfigError, InputError, NotaGenError, PromptError
from notagen.io import atomic_write_json, atomic_write_text, content_hash
from notagen.metrics.memorisation import MemorisationIndex, flagged_share
from notagen.metrics.scores import LinearProbe, acs, validity
from notagen.prompt import Prompt, prompt_key


@dataclass
class GeneratedFile:
    """A generated piece as read from a file to be scored (the engine's own result is `GeneratedFile`)."""

    name: str
    raw: str
    text: str  # interleaved, rest-unreduced, no [r:] (prompt lines kept; features drop them)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def prompt(self) -> str | None:
        return prompt_key(self.labels)


def _manifest_prompts(folder: Path) -> dict[str, dict[str, str]]:
    """File name → labels from a manifest.json beside the pieces (several shapes accepted)."""
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: bad JSON ({error.msg} at line {error.lineno})") from None
    entries: list[tuple[str, Any]] = []
    items = data.get("pieces", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        entries = list(items.items())
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                name = item.get("file") or item.get("path") or item.get("name")
                if name:
                    entries.append((str(name), item))
    out: dict[str, dict[str, str]] = {}
    for name, item in entries:
        if not isinstance(item, dict):
            continue
        source = item.get("prompt", item)
        try:
            prompt = (Prompt.parse(source) if isinstance(source, str)
                      else Prompt.of(source) if isinstance(source, dict) else None)
        except PromptError:
            prompt = None
        if prompt is not None:
            out[Path(name).name] = prompt.to_dict()
    return out


def normalise_generated(text: str) -> str:
    """Strip `[r:]` annotations and re-insert the voices a rest-reduced piece omits."""
    from notagen.abc.interleave import is_interleaved, is_rest_reduced, rest_unreduce
    from notagen.abc.text import strip_stream_annotations

    clean = strip_stream_annotations(text)
    try:
        if is_interleaved(clean) and is_rest_reduced(clean):
            return rest_unreduce(clean)
    except (ValueError, IndexError, NotaGenError):
        return clean
    return clean


def _asked_prompt(path: Path) -> dict[str, str]:
    """The prompt in the JSON manifest `notagen generate` writes beside a piece (`NAME.json` for `NAME.raw.abc`)."""
    stem = path.name[: -len(".raw.abc")] if path.name.endswith(".raw.abc") else path.stem
    manifest = path.with_name(stem + ".json")
    if not manifest.is_file():
        return {}
    try:
        prompt = json.loads(manifest.read_text(encoding="utf-8")).get("prompt")
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    prompt = Prompt.of(prompt) if isinstance(prompt, dict) else None
    return {} if prompt is None else prompt.to_dict()


def read_generated(folder: Path) -> list[GeneratedFile]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of generated .abc files")
    files = sorted(path for path in folder.rglob("*.abc")
                   if not any(part.startswith(".") for part in path.relative_to(folder).parts))
    # `notagen generate` writes each piece three times (raw, interleaved, standard ABC): score the raw text once.
    raw_files = [path for path in files if path.name.endswith(".raw.abc")]
    files = raw_files or files
    if not files:
        raise InputError(f"{folder}: no .abc files")
    manifest = _manifest_prompts(folder)
    pieces = []
    for path in files:
        raw = path.read_text(encoding="utf-8", errors="replace")
        # The prompt asked for: the piece's own JSON manifest (`notagen generate`), else its first prompt lines
        # (the model may write more prompt lines after the given ones), else a manifest.json beside the files.
        from_lines = Prompt.from_text(raw)
        labels = _asked_prompt(path) or (from_lines.to_dict() if from_lines else {}) or manifest.get(path.name, {})
        pieces.append(GeneratedFile(str(path.relative_to(folder)), raw, normalise_generated(raw), labels))
    return pieces


def _reference_hash(reference: Path, split: str) -> str:
    if is_dataset(reference):
        return content_hash((reference / "index.jsonl").read_bytes() + split.encode())
    return content_hash("|".join(str(p) for p in sorted(reference.rglob("*.abc"))) + split)


def _embed_reference(extractor: Any, pieces: list[Piece], cache: Path | None) -> np.ndarray:
    if cache is not None and cache.is_file():
        features = np.load(cache)
        if len(features) == len(pieces):
            return features
    features = extractor.embed([p.text for p in pieces])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, features)
    return features


def _probe_scores(ref_features: np.ndarray, ref_pieces: list[Piece], gen_features: np.ndarray,
                  generated: list[GeneratedFile], eval_features: np.ndarray | None,
                  eval_pieces: list[Piece]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    generated_prompts = [str(Prompt.of(g.labels)) if Prompt.of(g.labels) else None for g in generated]
    eval_prompts = [str(Prompt.of(p.labels)) if Prompt.of(p.labels) else None for p in eval_pieces]
    for label in ("period", "composer", "instrumentation"):
        labels = [p.labels.get(label) for p in ref_pieces]
        keep = [i for i, y in enumerate(labels) if y]
        if len({labels[i] for i in keep}) < 2:
            out[label] = {"skipped": "fewer than two labelled classes in the reference"}
            continue
        probe = LinearProbe.fit(ref_features[keep], [labels[i] for i in keep])
        entry: dict[str, Any] = {"classes": probe.classes, "n_train": probe.n_train,
                                 "train_accuracy": probe.train_accuracy}
        if eval_features is not None and eval_pieces:
            truth = [p.labels.get(label) for p in eval_pieces]
            entry["reference_eval_accuracy"] = probe.accuracy(eval_features, truth)
            entry["n_reference_eval"] = sum(t is not None for t in truth)
        wanted = [g.labels.get(label) for g in generated]
        entry["la"] = probe.accuracy(gen_features, wanted)
        entry["n"] = sum(w is not None for w in wanted)
        # Per prompt: does the probe recognise each prompt's pieces as its own (and the real held-out ones)?
        per_prompt: dict[str, dict[str, Any]] = {}
        for key in sorted({k for k in generated_prompts if k}):
            rows = [i for i, k in enumerate(generated_prompts) if k == key]
            row_entry: dict[str, Any] = {"la": probe.accuracy(gen_features[rows], [wanted[i] for i in rows]),
                                         "n": len(rows)}
            real_rows = [i for i, k in enumerate(eval_prompts) if k == key]
            if eval_features is not None and real_rows:
                row_entry["real_la"] = probe.accuracy(eval_features[real_rows],
                                                      [eval_pieces[i].labels.get(label) for i in real_rows])
                row_entry["real_n"] = len(real_rows)
            per_prompt[key] = row_entry
        entry["per_prompt"] = per_prompt
        out[label] = entry
    return out


def is_missing(value: Any) -> bool:
    """None or NaN: a number a report cannot give."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(value: Any, digits: int = 3) -> str:
    """A report cell: floats to `digits` places, None and NaN as an en dash."""
    if is_missing(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_fmt = format_value  # the report tables below are dense


def format_mean(mean: Any, se: Any, digits: int = 3) -> str:
    """A mean with its standard error, "0.824 ± 0.006" (the mean alone when the error is unknown)."""
    if is_missing(se):
        return format_value(mean, digits)
    return f"{format_value(mean, digits)} ± {format_value(se, digits)}"


def _plots(out: Path, generated: list[GeneratedFile], acs_scores: list[float] | None,
           runs: list[int] | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if acs_scores is not None:
        groups: dict[str, list[float]] = {}
        for piece, score in zip(generated, acs_scores):
            groups.setdefault(piece.prompt or "(no prompt)", []).append(score)
        names = sorted(groups)
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
        jitter = np.random.default_rng(0)
        for row, name in enumerate(names):  # a strip plot: every piece, and the prompt's mean as a bar
            values = groups[name]
            ax.scatter(values, row + jitter.uniform(-0.15, 0.15, len(values)), s=12, alpha=0.6)
            ax.plot([np.mean(values)] * 2, [row - 0.3, row + 0.3], color="black", linewidth=2)
        ax.set_yticks(range(len(names)), [n[:60] for n in names])
        ax.set_xlabel("cosine to the prompt's reference centroid (ACS)")
        ax.set_title("ACS per prompt")
        fig.tight_layout()
        fig.savefig(out / "acs_per_prompt.png", dpi=110)
        plt.close(fig)
        written.append("acs_per_prompt.png")
    if runs is not None:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist(runs, bins=range(0, max(runs + [4]) + 2), align="left", rwidth=0.85)
        ax.set_xlabel("longest run of bars copied from one training piece")
        ax.set_ylabel("pieces")
        fig.tight_layout()
        fig.savefig(out / "memorisation_runs.png", dpi=110)
        plt.close(fig)
        written.append("memorisation_runs.png")
    return written


def _cell(value: Any) -> str:
    """Table-safe text: a `|` inside a prompt would split the Markdown cell."""
    return str(value).replace("|", "\\|")


def _markdown(report: dict[str, Any], plots: list[str]) -> str:
    lines = [f"# Evaluation of `{report['generated']}`", "",
             f"Reference: `{report['reference']}` (split {report['split']}, N = {report['n_reference']}); "
             f"generated pieces: N = {report['n_generated']}.", ""]
    enc = report.get("encoder")
    if enc:
        lines += [f"Encoder: **{enc['encoder']}** (weights `{enc['weights']}`, mode {enc['mode']}, d = {enc['dim']}). "
                  "Encoder-based numbers are comparable only between reports naming the same encoder and weights.",
                  ""]
    else:
        lines += [f"Encoder: none ({report.get('encoder_skipped')}); ACS, FMD and LA were not computed.", ""]
    lines += ["## Summary", "", "| metric | value | N | notes |", "|---|---|---|---|"]
    if "acs" in report:
        a = report["acs"]
        lines.append(f"| ACS (± standard error) | {format_mean(a['mean'], a.get('se'))} | {a['n']} | "
                     f"{a['fallbacks']} pieces scored against the global "
                     f"centroid; real pieces of other prompts score {_fmt(a.get('other_prompts_mean'))} |")
    if "fmd" in report:
        f = report["fmd"]
        lines.append(f"| FMD ({f['estimator']}) | {_fmt(f['value'])} | {f['n_test']} vs {f['n_reference']} | "
                     f"d = {f['dim']} |")
    for label, entry in report.get("label_accuracy", {}).items():
        if "la" in entry:
            lines.append(f"| LA {label} | {_fmt(entry['la'])} | {entry['n']} | probe on {entry['n_train']} "
                         f"reference pieces; reference eval accuracy {_fmt(entry.get('reference_eval_accuracy'))} |")
        else:
            lines.append(f"| LA {label} | – | – | {entry.get('skipped')} |")
    if "validity" in report:
        v = report["validity"]
        lines.append(f"| validity rate | {_fmt(v['valid_rate'])} | {v['n']} | parses: {_fmt(v['parse_rate'])} |")
        lines.append(f"| BAE | {_fmt(100 * v['bae'] if v['bae'] == v['bae'] else v['bae'], 3)} % | {v['bars']} bars "
                     "| misaligned bars / bars |")
    if "memorisation" in report:
        m = report["memorisation"]
        lines.append(f"| memorised (≥ {m['threshold']} bars) | {_fmt(m['flagged_share'])} | {m['n']} | index of "
                     f"{m['indexed_pieces']} training pieces; longest run {m['max_run']} bars |")
        lines.append(f"| memorised, all voices (≥ {m['threshold']} whole bars) | "
                     f"{_fmt(m.get('flagged_whole_share'))} | {m['n']} | one voice's run alone does not count |")
    if "perplexity" in report:
        p = report["perplexity"]
        lines.append(f"| perplexity | {_fmt(p['perplexity'], 4)} | {p['n']} | {p['chars']} characters of the "
                     "reference eval split |")
    by_prompt = report.get("memorisation", {}).get("per_prompt") or {}
    if any(row.get("real_n") for row in by_prompt.values()):
        lines += ["", "## Memorisation per prompt", "",
                  f"Pieces with a run of ≥ {report['memorisation']['threshold']} bars copied from one training piece: "
                  "generated, and real held-out pieces of the prompt checked against the same training pieces.", "",
                  "| prompt | generated flagged | N | real held-out flagged | N |", "|---|---|---|---|---|"]
        for key, row in sorted(by_prompt.items()):
            lines.append(f"| {_cell(key)} | {_fmt(row['flagged_share'])} | {row['n']} | "
                         f"{_fmt(row['real_flagged_share'])} | {row['real_n']} |")
    probes = {label: entry["per_prompt"] for label, entry in report.get("label_accuracy", {}).items()
              if entry.get("per_prompt")}
    if probes:
        lines += ["", "## Label probes per prompt", "",
                  "Share of each prompt's pieces that a linear probe on the encoder's features (trained on the "
                  "reference) gives that prompt's own label; real held-out pieces of the prompt in parentheses.", "",
                  "| prompt | N | " + " | ".join(probes) + " |", "|---|---|" + "---|" * len(probes)]
        for key in sorted({k for per in probes.values() for k in per}):
            cells = []
            for per in probes.values():
                entry = per.get(key, {})
                real = f" ({_fmt(entry['real_la'])}, N {entry['real_n']})" if "real_la" in entry else ""
                cells.append(f"{_fmt(entry.get('la'))}{real}")
            n = next(per[key]["n"] for per in probes.values() if key in per)
            lines.append(f"| {_cell(key)} | {n} | " + " | ".join(cells) + " |")
    if "acs" in report and report["acs"]["per_prompt"]:
        lines += ["", "## ACS per prompt", "",
                  "Baseline: real reference pieces of the other prompts, scored against this prompt's centroid.", "",
                  "| prompt | N | mean ± SE | std | reference N | other prompts' real pieces (N) |",
                  "|---|---|---|---|---|---|"]
        for key, entry in report["acs"]["per_prompt"].items():
            lines.append(f"| {_cell(key)} | {entry['n']} | {format_mean(entry['mean'], entry.get('se'))} | "
                         f"{_fmt(entry['std'])} | "
                         f"{entry['reference_n']} | {_fmt(entry.get('other_prompts_mean'))} "
                         f"({entry.get('other_prompts_n', 0)}) |")
    if report.get("examples"):
        lines += ["", "## Examples", "", "| piece | prompt | ACS | longest copied run | valid |",
                  "|---|---|---|---|---|"]
        for ex in report["examples"]:
            lines.append(f"| `{ex['name']}` | {_cell(ex.get('prompt') or '–')} | {_fmt(ex.get('acs'))} | "
                         f"{ex.get('run', '–')} {('from ' + ex['run_piece']) if ex.get('run_piece') else ''} | "
                         f"{_fmt(ex.get('valid'))} |")
    if report.get("memorisation", {}).get("flagged"):
        lines += ["", "## Flagged as memorised", ""]
        for item in report["memorisation"]["flagged"]:
            lines.append(f"* `{item['name']}`: {item['bars']} bars from `{item['piece']}` "
                         f"(generated bar {item['generated_start']}, training bar {item['train_start']})")
    if "theory" in report:
        from notagen.metrics.theory_report import theory_markdown

        lines += [""] + theory_markdown(report["theory"])
    for plot in plots:
        lines += ["", f"![{plot}]({plot})"]
    lines += ["", f"Timings (s): {json.dumps(report['timings_s'])}", ""]
    return "\n".join(lines)


def _memorisation_by_prompt(index: MemorisationIndex, threshold: int, generated: list[GeneratedFile],
                            results: list[Any], held_out: list[Piece]) -> dict[str, dict[str, Any]]:
    """Per prompt: the share of generated pieces flagged as memorised next to the share of the reference's real
    held-out pieces of that prompt flagged against the same training index (pieces that share a tune or a
    cadence with a training piece are flagged too, so a real baseline says what "copied" means for a style)."""
    rows: dict[str, dict[str, Any]] = {}
    for piece, result in zip(generated, results):
        row = rows.setdefault(piece.prompt or "(no prompt)", {"n": 0, "flagged": 0})
        row["n"] += 1
        row["flagged"] += bool(result.flagged)
    real: dict[str, list[bool]] = {}
    for piece in held_out:
        key = prompt_key(piece.labels)
        if key in rows:
            real.setdefault(key, []).append(index.check(piece.text, threshold=threshold).flagged)
    for key, row in rows.items():
        row["flagged_share"] = row["flagged"] / row["n"]
        flags = real.get(key, [])
        row["real_n"] = len(flags)
        row["real_flagged_share"] = sum(flags) / len(flags) if flags else None
    return rows


def evaluate(generated_dir: Path, reference: Path, encoder: str | None = None, out: Path | None = None,
             split: str = "train", threshold: int = 4, estimator: str = "oas", model: str | None = None,
             check_validity: bool = True, batch_size: int = 8, max_reference: int = 0,
             plots: bool = True, device: str = "cpu", precision: str = "fp32", theory: bool = True,
             theory_min_real: int = 5, cache_dir: Path | None = None) -> dict[str, Any]:
    """Compute every metric and write report.json / report.md (+ PNG plots) to `out` when given.

    `theory` adds the music-theory report (`notagen.metrics.theory_report`): generated pieces next to the
    reference's real held-out pieces of the same prompt (train pieces added for a prompt with fewer than
    `theory_min_real` held out), the real side cached under `cache_dir`."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    generated = read_generated(Path(generated_dir))
    reference = Path(reference)
    ref_pieces = load_pieces(reference, split=None if split == "all" else split,
                             limit=max_reference or None)
    eval_pieces = (load_pieces(reference, split="eval", limit=max_reference or None)
                   if is_dataset(reference) and split == "train" and any(r.get("split") == "eval"
                                                                         for r in read_index(reference)) else [])
    timings["read"] = round(time.perf_counter() - clock, 2)
    report: dict[str, Any] = {"generated": str(generated_dir), "reference": str(reference), "split": split,
                              "n_generated": len(generated), "n_reference": len(ref_pieces)}
    acs_scores: list[float] | None = None

    # Encoder metrics.
    from notagen.encoder.loading import load_encoder

    try:
        loaded = load_encoder(encoder)
    except NotaGenError as error:
        if encoder is not None:
            raise
        loaded = None
        report["encoder_skipped"] = str(error)
    if loaded is not None:
        clock = time.perf_counter()
        extractor = loaded.extractor(batch_size=batch_size, device=device)
        report["encoder"] = extractor.describe()
        cache = None
        if out is not None:
            cache = Path(out) / "cache" / f"reference_{loaded.weights_id}_{_reference_hash(reference, split)}.npy"
        ref_features = _embed_reference(extractor, ref_pieces, cache)
        gen_features = extractor.embed([g.text for g in generated])
        eval_features = extractor.embed([p.text for p in eval_pieces]) if eval_pieces else None
        timings["features"] = round(time.perf_counter() - clock, 2)
        result = acs(gen_features, [g.prompt for g in generated], ref_features,
                     [prompt_key(p.labels) for p in ref_pieces])
        acs_scores = result.scores
        report["acs"] = {k: v for k, v in result.to_dict().items() if k not in ("scores", "centroid_used")}
        report["acs"].update(report["encoder"])
        if len(generated) >= 2 and len(ref_pieces) >= 2:
            from notagen.metrics.fmd import fmd

            report["fmd"] = {**fmd(ref_features, gen_features, estimator).to_dict(), **report["encoder"]}
        report["label_accuracy"] = _probe_scores(ref_features, ref_pieces, gen_features, generated,
                                                 eval_features, eval_pieces)

    if check_validity:
        clock = time.perf_counter()
        summary = validity([g.raw for g in generated], [g.name for g in generated])
        report["validity"] = {k: v for k, v in summary.to_dict().items() if k != "per_piece"}
        valid_by_name = {p["name"]: p["valid"] for p in summary.per_piece}
        timings["validity"] = round(time.perf_counter() - clock, 2)
    else:
        valid_by_name = {}

    clock = time.perf_counter()
    train_pieces = ref_pieces if split != "eval" else load_pieces(reference, split="train")
    index = MemorisationIndex.build((p.id, p.text) for p in train_pieces)
    timings["memorisation_index"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    results = [index.check(g.text, threshold=threshold) for g in generated]
    timings["memorisation_check"] = round(time.perf_counter() - clock, 2)
    runs = [r.longest.bars for r in results]
    report["memorisation"] = {
        "threshold": threshold, "n": len(results), "indexed_pieces": len(index), "flagged_share":
        flagged_share(results), "flagged_whole_share": flagged_share(results, whole_only=True),
        "max_run": max(runs, default=0), "mean_run": float(np.mean(runs)) if runs else 0.0,
        "flagged": [{"name": g.name, "bars": r.longest.bars, "piece": r.longest.piece,
                     "train_start": r.longest.train_start, "generated_start": r.longest.generated_start}
                    for g, r in zip(generated, results) if r.flagged],
        "unparsed_training_pieces": len(index.failed),
        "per_prompt": _memorisation_by_prompt(index, threshold, generated, results,
                                              ref_pieces if split == "eval" else eval_pieces),
    }

    if model is not None:
        clock = time.perf_counter()
        report["perplexity"] = _perplexity(model, reference, device, precision)
        timings["perplexity"] = round(time.perf_counter() - clock, 2)

    if theory:
        from notagen.metrics.theory_report import build_theory_report

        clock = time.perf_counter()
        report["theory"] = build_theory_report(generated, reference, theory_min_real, cache_dir)
        timings["theory"] = round(time.perf_counter() - clock, 2)

    order = list(range(len(generated)))
    if acs_scores is not None:
        order.sort(key=lambda i: -acs_scores[i])
    picks = order[:3] + [i for i in order[-3:] if i not in order[:3]]
    report["examples"] = [{"name": generated[i].name, "prompt": generated[i].prompt,
                           "acs": acs_scores[i] if acs_scores is not None else None, "run": runs[i],
                           "run_piece": results[i].longest.piece, "valid": valid_by_name.get(generated[i].name)}
                          for i in picks]
    report["per_piece"] = [{"name": g.name, "prompt": g.prompt,
                            "acs": acs_scores[i] if acs_scores is not None else None,
                            "longest_run": runs[i], "run_piece": results[i].longest.piece,
                            "flagged": results[i].flagged, "flagged_whole": results[i].flagged_whole,
                            "valid": valid_by_name.get(g.name)}
                           for i, g in enumerate(generated)]
    report["timings_s"] = timings
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = _plots(out, generated, acs_scores, runs) if plots else []
        if plots and "theory" in report:
            from notagen.metrics.theory_report import theory_plot

            written += [name for name in [theory_plot(report["theory"], out)] if name]
        atomic_write_json(out / "report.json", report)
        atomic_write_text(out / "report.md", _markdown(report, written))
    return report


def _perplexity(model_path: str, reference: Path, device: str, precision: str = "fp32") -> dict[str, Any]:
    from notagen.data.dataset import ScoreDataset
    from notagen.metrics.scores import perplexity
    from notagen.patchilizer import Patchilizer
    from notagen.weights import open_checkpoint

    checkpoint = open_checkpoint(model_path, device=device, precision=precision)  # type: ignore[arg-type]
    config = checkpoint.config
    dataset = ScoreDataset(reference, split="eval")
    texts = [dataset.text(i, prompt=True) for i in range(min(len(dataset), 200))]
    if not texts:
        return {"skipped": "the reference has no eval split"}
    patchilizer = Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
    result = perplexity(checkpoint.model, texts, patchilizer, device=device)
    return {"perplexity": result.perplexity, "nll_per_char": result.nll_per_char, "chars": result.chars,
            "n": result.n, "model": str(model_path), "precision": precision}


def eval_command(
    generated: Path,
    reference: Path | None = None,
    encoder: str | None = None,
    out: Path | None = None,
    split: Literal["train", "eval", "all"] = "train",
    threshold: int = 4,
    estimator: Literal["oas", "shrinkage", "mle"] = "oas",
    model: str | None = None,
    validity: bool = True,
    batch_size: int = 8,
    max_reference: int = 0,
    threads: int = 0,
    device: str = "cpu",
    precision: Literal["fp32", "bf16", "int8"] = "fp32",
    theory: bool = True,
    theory_min_real: int = 5,
) -> int:
    """Score generated pieces against a reference dataset: ACS, FMD, label accuracy, BAE, memorisation, music theory.

    GENERATED is a folder of .abc files (interleaved, possibly with prompt lines and [r:] annotations), such as a
    `notagen generate` output folder. A piece's prompt is read from its JSON manifest, its % lines, or a
    manifest.json beside the files. The music-theory report puts each prompt's pieces next to the reference's real
    held-out pieces of the same prompt (tonic endings, beat chords, parallels, rests, ranges, instrumentation…;
    see docs/evaluation.md); the real side is cached in $NOTAGEN_CACHE (default ~/.cache/notagen). Writes report.md
    (tables, plots), report.json and the PNG plots to --out (default GENERATED/eval).

    Args:
        generated: folder of generated .abc files.
        reference: the reference (required): a built dataset folder, or a folder of .abc files.
        encoder: encoder directory or official CLaMP 2 / CLaMP 3 / M3 .pth (default: the shipped encoder, if any).
        out: report folder.
        split: reference split used for centroids, probes and the memorisation index.
        threshold: bars in a row copied from one training piece that flag a piece as memorised.
        estimator: covariance estimator for FMD (oas or shrinkage for small sets; mle needs N >> dimension).
        model: NotaGen checkpoint (directory, .pth, hf:… or official name) whose perplexity on the reference's
            eval split is reported.
        validity: check every piece with notagen check (validity rate, BAE).
        batch_size: encoder batch size.
        max_reference: use at most this many reference pieces (0 = all).
        threads: torch CPU threads (0 = default).
        device: torch device for the encoder and the model.
        theory: add the music-theory report (generated vs real pieces of the same prompt).
        theory_min_real: a prompt with fewer real held-out pieces than this is compared with its train pieces too.
        precision: weights of --model: fp32, bf16 or int8 (CPU), to see what a lower precision costs.

    Examples:
        notagen eval runs/samples --reference datasets/music21 --encoder runs/encoder-small/best --out runs/eval
    """
    if reference is None:
        raise ConfigError("notagen eval needs --reference DATASET (the training or reference dataset)")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    out = out or Path(generated) / "eval"
    report = evaluate(Path(generated), Path(reference), encoder, out, split, threshold, estimator, model, validity,
                      batch_size, max_reference, True, device, precision, theory, theory_min_real)
    parts = []
    if "acs" in report:
        parts.append(f"ACS {format_mean(report['acs']['mean'], report['acs'].get('se'))}")
    if "fmd" in report:
        parts.append(f"FMD {report['fmd']['value']:.3f}")
    if "validity" in report:
        parts.append(f"valid {report['validity']['valid_rate']:.2f}")
    parts.append(f"memorised {report['memorisation']['flagged_share']:.2f}")
    if "theory" in report:
        from notagen.metrics.theory_report import pooled_mean

        tonic = pooled_mean(report["theory"], "tonic_ending")
        if tonic is not None:
            parts.append(f"tonic endings {100 * tonic:.0f} %")
    print(f"{report['n_generated']} pieces: " + ", ".join(parts) + f"; report in {out / 'report.md'}")
    return 0
