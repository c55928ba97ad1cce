"""Benchmark `notagen data build` on a fixed sample of the music21 corpus, with 1 and 2 workers.

Sample: 20 Bach chorales + 5 quartet movements + 40 folk tunes (O'Neill), the same files every run. Prints a small
table (pieces/s, chars/s, wall seconds) and writes benchmarks/results/data_build.json. Each worker count builds
into a fresh folder, so nothing is resumed.

    python benchmarks/data_build.py [--workers 1 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from notagen.data.build import build_dataset
from notagen.data.sources import music21_corpus_dir, split_abc_tunes

RESULTS = Path(__file__).parent / "results" / "data_build.json"
QUARTETS = ["haydn/opus1no1/movement2.mxl", "haydn/opus1no1/movement4.mxl", "mozart/k155/movement2.mxl",
            "mozart/k156/movement2.mxl", "beethoven/opus18no1/movement3.mxl"]


def make_sample(folder: Path) -> dict[str, int]:
    """Copy the fixed sample into `folder` (folk tunes as one multi-tune ABC file)."""
    corpus = music21_corpus_dir()
    (folder / "chorales").mkdir(parents=True)
    (folder / "quartets").mkdir()
    (folder / "folk").mkdir()
    chorales = sorted((corpus / "bach").glob("bwv*.mxl"))[:20]
    for path in chorales:
        shutil.copy(path, folder / "chorales" / path.name)
    for rel in QUARTETS:
        shutil.copy(corpus / rel, folder / "quartets" / rel.replace("/", "_"))
    header, tunes = split_abc_tunes((corpus / "oneills1850" / "0001-0050.abc").read_text(encoding="utf-8"))
    (folder / "folk" / "oneills-0001-0040.abc").write_text(header + "".join(tunes[:40]), encoding="utf-8")
    return {"chorales": len(chorales), "quartet movements": len(QUARTETS), "folk tunes": 40}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="keep the built datasets under this folder")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="notagen-bench-") as tmp:
        sample = Path(tmp) / "sample"
        composition = make_sample(sample)
        for workers in args.workers:
            out = (args.keep or Path(tmp)) / f"dataset-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            summary = build_dataset([sample], out, workers=workers, progress=False, log=lambda message: None)
            wall = time.perf_counter() - started
            report = json.loads((out / "report.json").read_text())
            journal = [json.loads(line) for line in (out / ".build" / "journal.jsonl").read_text().splitlines()]
            piece_seconds = sorted(e["seconds"] for e in journal if e.get("seconds") is not None)
            pieces = summary.built + summary.failed
            rows.append({
                "workers": workers, "pieces": pieces, "built": summary.built, "failed": summary.failed,
                "wall_s": round(wall, 2), "pieces_per_s": round(pieces / wall, 3),
                "chars_per_s": round(report["totals"]["chars"] / wall, 1),
                "median_piece_s": piece_seconds[len(piece_seconds) // 2] if piece_seconds else None,
                "max_piece_s": piece_seconds[-1] if piece_seconds else None,
                "reasons": report["reasons"],
            })
    print(f"{'workers':>7} {'pieces':>6} {'built':>5} {'wall s':>7} {'pieces/s':>8} {'chars/s':>9} "
          f"{'median s':>8} {'max s':>6}")
    for row in rows:
        print(f"{row['workers']:>7} {row['pieces']:>6} {row['built']:>5} {row['wall_s']:>7.1f} "
              f"{row['pieces_per_s']:>8.2f} {row['chars_per_s']:>9.0f} {row['median_piece_s']:>8.2f} "
              f"{row['max_piece_s']:>6.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"sample": composition, "machine": platform.platform(),
                                   "cpus": __import__("os").cpu_count(), "runs": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
