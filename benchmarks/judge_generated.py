"""Pieces as users get them, before the outside judges: `notagen generate` (the README's main command, default
settings) writes N pieces for every prompt of a model, then every piece's files are judged.

For each piece: strict validity (`notagen.abc.check`), abc2midi and abcm2ps on its interleaved ABC, music21 on its
MusicXML, mido on its MIDI file; and how many attempts it took (`--retries` regenerates invalid pieces).

    python benchmarks/judge_generated.py [--pieces 25] [--seed 1] [--out /tmp/judged] [--checkpoint DIR]

Prompts whose folder already holds N pieces are judged, not written again, so `--shard 0/2` and `--shard 1/2` in
two processes write the pieces, and a last run without `--shard` judges them all.

Writes benchmarks/results/judge_generated.json and prints a table per prompt.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from notagen.generation.cli import generate_command
from notagen.judges import judge_abc
from notagen.weights import open_checkpoint

RESULTS = Path(__file__).parent / "results" / "judge_generated.json"


def judge_folder(folder: Path) -> dict:
    """Judge one `notagen generate` piece folder by its files."""
    manifest = json.loads(next(folder.glob("*.json")).read_text())
    abc = next(folder.glob("*.interleaved.abc"), None)
    xml = next(folder.glob("*.musicxml"), None)
    midi = next(folder.glob("*.mid"), None)
    verdict = judge_abc(abc.read_text() if abc else "", xml.read_text() if xml else None,
                        midi.read_bytes() if midi else None)
    return {"name": folder.name, "valid": manifest["valid"], "attempts": len(manifest["attempts"]),
            "first_attempt_valid": manifest["attempts"][0]["valid"], "judges": verdict.to_dict(),
            "files": sorted(manifest["files"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=25, help="pieces per prompt")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/judged"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--shard", default="0/1", help="i/n: only the prompts whose number is i modulo n")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--formats", nargs="*", default=None,
                        help="files to write per piece (default: all, as users get them); the judges read the ABC, "
                             "MusicXML and MIDI, so `abc musicxml midi` judges as much in less time")
    args = parser.parse_args()
    shard, shards = (int(part) for part in args.shard.split("/"))
    loaded = open_checkpoint(args.checkpoint)
    rows = []
    started = time.perf_counter()
    for number, prompt in enumerate(loaded.prompts):
        if number % shards != shard:
            continue
        folder = args.out / f"prompt-{number}"
        done = [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []
        if len(done) < args.pieces:
            generate_command(period=prompt["period"], composer=prompt["composer"],
                             instrumentation=prompt["instrumentation"], n=args.pieces, seed=args.seed,
                             checkpoint=args.checkpoint, output=folder, formats=args.formats,
                             device="cpu")
        pieces = [judge_folder(path) for path in sorted(folder.iterdir()) if path.is_dir()]
        rows.append({"prompt": prompt, "pieces": pieces})
    print(f"{'prompt':<44} {'N':>3} {'valid':>6} {'1st try':>8} {'abc2midi':>9} {'abcm2ps':>8} {'music21':>8} "
          f"{'mido':>5} {'all':>5}")
    totals: dict[str, int] = {}
    for row in rows:
        pieces = row["pieces"]
        counts = {"N": len(pieces), "valid": sum(p["valid"] for p in pieces),
                  "first": sum(p["first_attempt_valid"] for p in pieces)}
        for judge in ("abc2midi", "abcm2ps", "music21", "mido"):
            counts[judge] = sum(p["judges"]["judges"].get(judge, {}).get("accepted", False) for p in pieces)
        counts["all"] = sum(p["valid"] and p["judges"]["accepted"] for p in pieces)
        row["counts"] = counts
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        name = f"{row['prompt']['composer']} / {row['prompt']['instrumentation']}"[:44]
        print(f"{name:<44} {counts['N']:>3} {counts['valid']:>6} {counts['first']:>8} {counts['abc2midi']:>9} "
              f"{counts['abcm2ps']:>8} {counts['music21']:>8} {counts['mido']:>5} {counts['all']:>5}")
    print(f"{'all prompts':<44} {totals['N']:>3} {totals['valid']:>6} {totals['first']:>8} {totals['abc2midi']:>9} "
          f"{totals['abcm2ps']:>8} {totals['music21']:>8} {totals['mido']:>5} {totals['all']:>5}")
    problems = [f"{p['name']}: {problem}" for row in rows for p in row["pieces"]
                for judge in p["judges"]["judges"].values() for problem in judge["problems"]]
    for problem in problems[:20]:
        print("  ", problem)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"totals": totals, "rows": rows, "seconds": time.perf_counter() - started,
                                   "pieces_per_prompt": args.pieces, "seed": args.seed,
                                        "formats": args.formats or "all"}, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
