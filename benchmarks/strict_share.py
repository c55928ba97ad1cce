"""How much real music passes the strict rules: every piece of a built dataset through `notagen check`'s rules.

    python benchmarks/strict_share.py DATASET [--split all|train|eval] [--limit N]

Prints the share of strict-valid pieces per collection, and for the others how many pieces break each rule; writes
benchmarks/results/strict_share.json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from notagen.abc.check import check_abc

RESULTS = Path(__file__).parent / "results" / "strict_share.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="all", choices=("all", "train", "eval"))
    parser.add_argument("--limit", type=int, default=0, help="at most this many pieces (0: all)")
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.dataset / "index.jsonl").read_text().splitlines() if line]
    if args.split != "all":
        records = [record for record in records if record.get("split") == args.split]
    if args.limit:
        records = records[:args.limit]
    valid: Counter[str] = Counter()
    total: Counter[str] = Counter()
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, str] = {}
    for record in tqdm(records, desc="checking", unit="piece"):
        piece = json.loads((args.dataset / "pieces" / f"{record['id']}.json").read_text())
        # The abc2xml round trip was verified when the dataset was built: the strict rules are what is asked here.
        report = check_abc(piece["interleaved"], abc2xml_error=None)
        collection = record.get("collection", "?")
        total[collection] += 1
        valid[collection] += report.valid
        for rule in report.failure_counts:
            rules[collection][rule] += 1
            examples.setdefault(rule, f"{record['id']}: {report.failures[0] if report.failures else ''}")
    print(f"{'collection':<28} {'pieces':>7} {'valid':>7} {'share':>6}  pieces failing each rule")
    for collection in sorted(total):
        failing = ", ".join(f"{rule} {count}" for rule, count in rules[collection].most_common())
        print(f"{collection:<28} {total[collection]:>7} {valid[collection]:>7} "
              f"{valid[collection] / total[collection]:>6.1%}  {failing}")
    all_total, all_valid = sum(total.values()), sum(valid.values())
    print(f"{'all':<28} {all_total:>7} {all_valid:>7} {all_valid / max(1, all_total):>6.1%}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"dataset": str(args.dataset), "split": args.split, "total": dict(total),
                                   "valid": dict(valid), "rules": {c: dict(r) for c, r in rules.items()},
                                   "examples": examples}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
