"""Keep in a model's prompt registry only the prompts whose pieces are recognisably their style.

A prompt earns its place when, over its generated pieces in a `notagen eval` report:
* the period and instrumentation probes (linear probes on the encoder's features, trained on the real reference)
  give its own label to at least `--min-probe` of them,
* the music-theory report finds the prompt's instrumentation in at least `--min-fit` of them (part names, clefs and
  ranges against the prompt), and
* every one of them is strict-valid,
* at least `--min-distinct` of their 4-bar melodic patterns are distinct, and
* they are flagged as memorised no more often than the prompt's real held-out pieces.

The composer probe is reported beside them but does not decide: real held-out pieces of one period and
instrumentation are often told apart no better by it.

    python scripts/gate_prompts.py EVAL_DIR/report.json CHECKPOINT_DIR [--min-probe 0.8] [--min-fit 0.8]
        [--min-distinct 0.95] [--dry-run]

Rewrites CHECKPOINT_DIR/config.json (atomically) with the kept prompts, and records every decision, with its
numbers, under `training.prompt_gate`; prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from notagen.io import atomic_write_json
from notagen.metrics.gate import DECIDING_PROBES, decisions
from notagen.prompt import Prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--min-probe", type=float, default=0.8)
    parser.add_argument("--min-fit", type=float, default=0.8)
    parser.add_argument("--min-distinct", type=float, default=0.95)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    report = json.loads(args.report.read_text(encoding="utf-8"))
    rows = decisions(report, args.min_probe, args.min_fit, args.min_distinct)
    config_path = args.checkpoint / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    print(f"{'prompt':<62} {'N':>3} {'valid':>5} {'period':>6} {'instr':>6} {'comp':>6} {'fit':>5} {'copied':>6} "
          f"{'real':>5}  kept")

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    for key, row in sorted(rows.items()):
        print(f"{key[:62]:<62} {row['n']:>3} {cell(row['valid']):>5} {cell(row['probe_period']):>6} "
              f"{cell(row['probe_instrumentation']):>6} {cell(row['probe_composer']):>6} "
              f"{cell(row['instrumentation_fit']):>5} {cell(row.get('memorised')):>6} "
              f"{cell(row.get('real_memorised')):>5}  "
              f"{'yes' if row['kept'] else 'no: ' + '; '.join(row['reasons'])}")
    kept = [p for p in config["prompts"] if rows.get(str(Prompt.of(p)), {}).get("kept")]
    unjudged = [str(Prompt.of(p)) for p in config["prompts"] if str(Prompt.of(p)) not in rows]
    if unjudged:
        print("not in the report (dropped):", "; ".join(unjudged))
    print(f"{len(kept)} of {len(config['prompts'])} prompts kept")
    if args.dry_run:
        return
    config["prompts"] = kept
    config.setdefault("training", {})["prompt_gate"] = {
        "report": str(args.report), "min_probe": args.min_probe, "min_fit": args.min_fit,
        "min_distinct": args.min_distinct,
        "deciding_probes": list(DECIDING_PROBES), "prompts": rows}
    atomic_write_json(config_path, config)
    print(f"wrote {config_path}")


if __name__ == "__main__":
    main()
