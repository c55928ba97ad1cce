"""Does one CLaMP-DPO iteration raise the ACS of fresh samples? A tiny end-to-end run on CPU.

The setup of tests/test_dpo_loop.py (a tiny model fine-tuned on two prompts: Bach chorales and Aird fiddle tunes)
scored by the shipped encoder (`notagen/models/encoder`). Per seed, a control run takes 0 DPO steps: it samples
and scores iteration 0, picks the pairs, keeps the model unchanged and samples the final eval (`iter_1`) with the
seeds of iteration 1, which DPO never trained on. Each learning rate then reuses the control's iteration-0 samples
and pairs, trains `--steps` DPOP steps and samples `iter_1` with the same fresh seeds, so after − before compares
two models on identical seeds. Prints a table and writes benchmarks/results/dpo_acs.json; the ± is the
stratified standard error of the difference (the two prompts' ACS differ far more than samples of one prompt).

Measured (shipped encoder, N=30 per prompt, 60 steps): ACS rose in 2/3, 1/3 and 0/3 seeds at lr 1e-5, 3e-5, 1e-4
(mean delta +0.004, −0.007, −0.014, each within about one standard error of 0.015-0.023); N=60, 200 steps or
longer samples (max_chars 1500) did not change the picture. Once the weights move, the same seeds give different
pieces, so one iteration's effect at this scale is below the sampling noise of the fresh samples.

    python benchmarks/dpo_acs.py                                  # 3 seeds × lr 1e-5, 3e-5, 1e-4; N=30; 60 steps
    python benchmarks/dpo_acs.py --seeds 0 --lrs 3e-6 --samples 16 --steps 200 --set max_chars=1500
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # the test helpers (dataset fixtures, the DPO test's pieces)

from test_dpo_loop import PIECES, copy_selection  # noqa: E402
from train_helpers import make_dataset  # noqa: E402

from notagen.checkpoint import save_checkpoint  # noqa: E402
from notagen.config import ModelConfig  # noqa: E402
from notagen.dpo.loop import DPORun  # noqa: E402
from notagen.dpo.recipe import load_dpo_recipe  # noqa: E402
from notagen.io import atomic_write_json  # noqa: E402
from notagen.model import NotaGenModel  # noqa: E402
from notagen.train.loop import Trainer  # noqa: E402
from notagen.train.recipe import load_recipe  # noqa: E402

RESULTS = HERE / "results" / "dpo_acs.json"


def fine_tune(root: Path, steps: int = 150) -> dict[str, Path]:
    """The DPO test's starting point: a tiny model fine-tuned on two prompts' pieces (seed 0)."""
    data = make_dataset(root / "data", PIECES)
    torch.manual_seed(0)
    save_checkpoint(root / "init", NotaGenModel(ModelConfig.preset("tiny")))
    config = load_recipe(None, [f"dataset={data}", f"output_dir={root / 'ft'}", "stage=finetune",
                                f"init_checkpoint={root / 'init'}", "batch_size=2", "lr=3e-3", "warmup_steps=2",
                                "eval_every=0", "save_every=1000", f"max_steps={steps}", "progress=false",
                                "tensorboard=false", "model.dropout=0.0"])
    trainer = Trainer(config)
    trainer.train()
    trainer.close()
    return {"data": data, "checkpoint": root / "ft" / "checkpoints" / "last"}


def dpo_overrides(setup: dict[str, Path], output: Path, seed: int, samples: int, steps: int, lr: float,
                  encoder: str | None, extra: list[str]) -> list[str]:
    """One DPO iteration plus the final eval; the pair and sampling settings of the DPO test."""
    items = [f"init_checkpoint={setup['checkpoint']}", f"reference={setup['data']}", f"output_dir={output}",
             "min_reference_pieces=2", f"samples_per_prompt={samples}", "iterations=1",
             f"steps_per_iteration={steps}", f"lr={lr}", "portion=0.25", "max_bars=6", "max_chars=600",
             f"sample_batch_size={min(samples, 16)}", "alignment_filter=false", "save_every=100000",
             "log_every=10", "progress=false", "device=cpu", f"seed={seed}", "final_eval=true"]
    if encoder is not None:
        items.append(f"encoder={encoder}")
    return items + extra


def run_dpo(overrides: list[str]) -> dict[str, Any]:
    run = DPORun(load_dpo_recipe(None, overrides))
    try:
        return run.run()
    finally:
        run.close()


def acs_row(report: dict[str, Any], k: int) -> dict[str, Any]:
    """ACS of iteration k's samples, per prompt, and the standard error of the ACS."""
    row = next(r for r in report["rows"] if r["iteration"] == k)
    scores = json.loads((Path(report["output_dir"]) / f"iter_{k}" / "scores.json").read_text(encoding="utf-8"))
    by_prompt: dict[str, list[float]] = {}
    for sample in scores["samples"]:
        by_prompt.setdefault(sample["prompt"], []).append(sample["score"])
    # Stratified: the prompts' ACS differ far more than samples within a prompt do.
    variance = sum(statistics.variance(v) / len(v) for v in by_prompt.values()) / len(by_prompt) ** 2
    return {"acs": row["acs"], "per_prompt": row["acs_per_prompt"], "valid_rate": row["valid_rate"],
            "se": variance ** 0.5}


def measure_seed(setup: dict[str, Path], root: Path, seed: int, lrs: list[float], samples: int, steps: int,
                 encoder: str | None, extra: list[str]) -> list[dict[str, Any]]:
    """Control (0 steps) and one trained run per lr, all sampled on the same fresh seeds."""
    control_dir = root / f"seed{seed}_control"
    started = time.perf_counter()
    control = run_dpo(dpo_overrides(setup, control_dir, seed, samples, 0, lrs[0], encoder, extra))
    control_seconds = time.perf_counter() - started
    before, trained_on = acs_row(control, 1), acs_row(control, 0)
    pairs = control["rows"][0]["pairs"]
    preferences = json.loads((control_dir / "iter_0" / "preferences.json").read_text(encoding="utf-8"))
    copies = sum(str(c["reason"]).startswith("plagiarism") for p in preferences["prompts"] for c in p["candidates"])
    rows = []
    for lr in lrs:
        out = root / f"seed{seed}_lr{lr:g}"
        copy_selection(control_dir, out)
        started = time.perf_counter()
        report = run_dpo(dpo_overrides(setup, out, seed, samples, steps, lr, encoder, extra))
        after = acs_row(report, 1)
        training = report["rows"][0]["training"]
        rows.append({
            "seed": seed, "lr": lr, "samples_per_prompt": samples, "steps": steps, "pairs": pairs,
            "excluded_as_copies": copies,
            "acs_iter0": trained_on["acs"], "acs_before": before["acs"], "acs_after": after["acs"],
            "delta": after["acs"] - before["acs"],
            "se_before": before["se"], "se_after": after["se"], "per_prompt_before": before["per_prompt"],
            "per_prompt_after": after["per_prompt"], "valid_before": before["valid_rate"],
            "valid_after": after["valid_rate"], "last_margin": training.get("last_margin"),
            "last_loss": training.get("last_loss"),
            "train_and_eval_seconds": round(time.perf_counter() - started, 1),
            "control_seconds": round(control_seconds, 1),
        })
    return rows


def short(label: str) -> str:
    return label.split("|")[1].strip().split(",")[0]


def print_table(rows: list[dict[str, Any]]) -> None:
    prompts = list(rows[0]["per_prompt_before"])
    head = f"{'seed':>4} {'lr':>7} {'pairs':>5} {'copies':>6} {'ACS before':>10} {'after':>7} {'delta ± se':>15}"
    head += "".join(f" {short(p) + ' b→a':>17}" for p in prompts) + f" {'valid b→a':>11} {'margin':>7} {'s':>6}"
    print(head)
    for r in rows:
        se = (r["se_before"] ** 2 + r["se_after"] ** 2) ** 0.5
        cells = "".join(f" {r['per_prompt_before'][p]:>8.4f}→{r['per_prompt_after'][p]:.4f}" for p in prompts)
        print(f"{r['seed']:>4} {r['lr']:>7.0e} {r['pairs']:>5} {r['excluded_as_copies']:>6} "
              f"{r['acs_before']:>10.4f} {r['acs_after']:>7.4f} "
              f"{r['delta']:>+8.4f}±{se:.4f}{cells} {r['valid_before']:>5.2f}→{r['valid_after']:.2f} "
              f"{r['last_margin'] or 0:>7.3f} {r['train_and_eval_seconds']:>6.1f}")
    for lr in sorted({r["lr"] for r in rows}):
        deltas = [r["delta"] for r in rows if r["lr"] == lr]
        print(f"lr {lr:g}: ACS rose in {sum(d > 0 for d in deltas)}/{len(deltas)} seeds; "
              f"mean delta {sum(deltas) / len(deltas):+.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4])
    parser.add_argument("--samples", type=int, default=30, help="samples per prompt and iteration")
    parser.add_argument("--steps", type=int, default=60, help="DPO steps of the iteration")
    parser.add_argument("--encoder", default=None, help="encoder directory (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--set", dest="extra", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more DPO recipe overrides, e.g. plagiarism_filter=false")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dpo_acs_") as tmp:
        root = args.workdir or Path(tmp)
        started = time.perf_counter()
        setup = fine_tune(root)
        fine_tune_seconds = time.perf_counter() - started
        rows = []
        for seed in args.seeds:
            rows += measure_seed(setup, root, seed, args.lrs, args.samples, args.steps, args.encoder, args.extra)
            print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    print_table(rows)
    result = {"setup": "tiny model fine-tuned 150 steps on 2 prompts (tests/test_dpo_loop.py); portion 0.25, "
                       "max_bars 6, max_chars 600; before = 0-step control, after = trained, same fresh seeds",
              "encoder": args.encoder or "shipped", "seeds": args.seeds, "lrs": args.lrs,
              "overrides": args.extra, "samples_per_prompt": args.samples, "steps": args.steps, "threads": args.threads,
              "fine_tune_seconds": round(fine_tune_seconds, 1), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "rows": rows}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
