"""Strict decoding: what it costs in speed, and how often the first attempt is valid, with the bundled model.

For every prompt of the bundled model, pieces are written with fixed seeds, strict decoding off and on, at batch 1
and 4. The runs are interleaved (off, on, off, on …) so that load from other processes hits both alike; times are
CPU seconds of this process (`time.process_time`) with one torch thread. Each piece's first attempt is then checked
with `notagen.abc.check` (strict rules) and, when `abc2midi` and `abcm2ps` are installed, by those programs too.

    python benchmarks/strict_decoding.py [--pieces 2] [--rounds 2] [--max-bars 16]

Writes benchmarks/results/strict_decoding.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from notagen.checkpoint import default_checkpoint_path, load_checkpoint
from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
from notagen.generation.postprocess import finish_text
from notagen.judges import judge_abc
from notagen.prompt import Prompt, prompt_context

RESULTS = Path(__file__).parent / "results" / "strict_decoding.json"


def run(engine: GenerationEngine, requests: list[PieceRequest], strict: bool, batch: int,
        limits: GenerationLimits) -> tuple[float, list]:
    start = time.process_time()
    pieces = engine.generate(requests, SamplingSettings(strict=strict), limits, batch_size=batch)
    return time.process_time() - start, pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=2, help="pieces per prompt per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--max-bars", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(default_checkpoint_path())
    engine = GenerationEngine(loaded.model)
    limits = GenerationLimits(max_bars=args.max_bars)
    requests = [PieceRequest(prompt_context(Prompt.of(prompt)), seed=1000 * p + i)
                for p, prompt in enumerate(loaded.prompts) for i in range(args.pieces)]
    totals: dict[tuple[int, bool], dict] = {}
    for round_index in range(args.rounds):
        for batch in (1, 4):
            for strict in (False, True):
                seconds, pieces = run(engine, requests, strict, batch, limits)
                cell = totals.setdefault((batch, strict), {"seconds": 0.0, "chars": 0, "pieces": []})
                cell["seconds"] += seconds
                cell["chars"] += sum(len(piece.generated) for piece in pieces)
                if round_index == 0:
                    cell["pieces"] = pieces
    rows = []
    for (batch, strict), cell in sorted(totals.items()):
        valid = judged = 0
        for piece in cell["pieces"]:
            finished = finish_text(piece.text)
            valid += finished.valid
            if finished.interleaved is not None:
                judged += judge_abc(finished.interleaved).accepted
        rows.append({"batch": batch, "strict": strict, "chars_per_second": cell["chars"] / cell["seconds"],
                     "pieces": len(cell["pieces"]), "first_attempt_valid": valid, "judges_accept": judged})
    baseline = {row["batch"]: row["chars_per_second"] for row in rows if not row["strict"]}
    print(f"{'batch':>5} {'strict':>6} {'chars/s':>8} {'cost':>6} {'valid (1st try)':>16} {'judges accept':>14}")
    for row in rows:
        row["cost"] = 1 - row["chars_per_second"] / baseline[row["batch"]]
        print(f"{row['batch']:>5} {str(row['strict']):>6} {row['chars_per_second']:>8.0f} {row['cost']:>6.1%} "
              f"{row['first_attempt_valid']:>9}/{row['pieces']:<6} {row['judges_accept']:>7}/{row['pieces']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "pieces_per_prompt": args.pieces, "rounds": args.rounds,
                                   "max_bars": args.max_bars, "threads": args.threads,
                                   "machine": platform.platform(), "torch": torch.__version__}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
