"""How long the music-theory report of `notagen eval` takes: generated pieces, and real baselines cold and cached.

By default: the bundled model writes N Bach chorales (fixed seeds), and a reference dataset holds real Bach
chorales of the music21 corpus (its eval split labelled with the same prompt). The report runs three times,
interleaved with nothing else: with an empty baseline cache (every real piece analysed), with the cache filled
(only the generated pieces analysed), and once more cached. Prints a table and writes
benchmarks/results/theory_report.json. The goal: a report on 50 pieces well under a minute once the real baselines
are cached.

Measured (2-core machine shared with other jobs, load ≈ 6; 40 bundled-model chorales, 40 real chorales): cold cache
51 s, cached 20 s and 19 s, i.e. 0.5 s per generated piece, so about 25 s for 50 pieces.

    python -m benchmarks.theory_report                        # 50 generated chorales, 40 real ones
    python -m benchmarks.theory_report --generated runs/pieces --reference datasets/music21
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "theory_report.json"
BACH = {"period": "Baroque", "composer": "Bach, Johann Sebastian", "instrumentation": "Choral"}


def chorale_reference(root: Path, count: int) -> Path:
    """A dataset of `count` real Bach chorales from the music21 corpus, all in the eval split, labelled Bach."""
    from music21 import corpus

    from notagen.convert import score_to_abc
    from notagen.encoder.corpus import Piece, write_dataset

    paths = sorted(p for p in corpus.getComposer("bach") if str(p).endswith(".mxl"))[:count]
    pieces = []
    for path in paths:
        try:
            text = score_to_abc(path, interleaved=True)
        except Exception:  # a corpus file xml2abc cannot read is no benchmark input
            continue
        pieces.append(Piece(path.stem, text, dict(BACH), "bach", "eval"))
    return write_dataset(root / "reference", pieces)


def generate(root: Path, count: int) -> Path:
    from notagen.cli import main

    out = root / "generated"
    code = main(["generate", *sum((["--" + k, v] for k, v in BACH.items()), []), "-n", str(count), "--seed", "1000",
                 "--formats", "abc", "--device", "cpu", "--output", str(out)])
    if code != 0:
        raise SystemExit("generation failed")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=Path, help="a folder of generated pieces (default: write --n)")
    parser.add_argument("--reference", type=Path, help="a reference dataset (default: real chorales)")
    parser.add_argument("--n", type=int, default=50, help="pieces to generate")
    parser.add_argument("--real", type=int, default=40, help="real chorales in the default reference")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from notagen.metrics.evaluate import read_generated
    from notagen.metrics.theory_report import build_theory_report

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generated_dir = args.generated or generate(root, args.n)
        reference = args.reference or chorale_reference(root, args.real)
        generated = read_generated(generated_dir)
        cache = root / "cache"
        rows = []
        for run in ("cold cache", "cached", "cached again"):
            clock = time.perf_counter()
            report = build_theory_report(generated, reference, cache_dir=cache)
            seconds = time.perf_counter() - clock
            real = sum(p.get("real", {}).get("n_pieces", 0) for p in report["prompts"].values())
            rows.append({"run": run, "generated": len(generated), "real": real, "seconds": round(seconds, 2),
                         "per_generated_piece": round(seconds / max(1, len(generated)), 3)})
    print(f"{'run':<14} {'generated':>9} {'real':>5} {'seconds':>8} {'s/generated piece':>18}")
    for row in rows:
        print(f"{row['run']:<14} {row['generated']:>9} {row['real']:>5} {row['seconds']:>8.2f} "
              f"{row['per_generated_piece']:>18.3f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "machine": platform.platform(), "python": sys.version.split()[0],
                                   "generated": str(args.generated or "bundled model, seeds 1000+"),
                                   "reference": str(args.reference or f"{args.real} music21 chorales")},
                                  indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
