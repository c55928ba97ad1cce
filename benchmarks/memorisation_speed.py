"""Speed of the memorisation index: build time over a corpus and check time per piece.

Targets (issue 5): indexing the whole built music21 dataset < 2 min; checking one piece < 50 ms.

    python benchmarks/memorisation_speed.py [DATASET] [--repeat N]

Without DATASET the bundled music21 ABC folk collections are used (O'Neill, Ryan, Aird, misc folk; ~4,300 tunes),
`--repeat` times over to emulate a larger corpus. Pieces are checked against the index built from the others.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    from notagen.encoder.corpus import load_dataset, music21_tunes
    from notagen.metrics.memorisation import MemorisationIndex

    started = time.perf_counter()
    if args.dataset:
        pieces = [(p.id, p.text) for p in load_dataset(args.dataset, split=None)]
    else:
        pieces = [(p.id, p.text) for folder in ("oneills1850", "ryansMammoth", "airdsAirs", "miscFolk")
                  for p in music21_tunes(folder)]
    read_s = time.perf_counter() - started
    corpus = [(f"{pid}@{r}", text) for r in range(args.repeat) for pid, text in pieces]
    queries = pieces[:: max(1, len(pieces) // args.queries)][: args.queries]

    started = time.perf_counter()
    index = MemorisationIndex.build(corpus)
    build_s = time.perf_counter() - started
    chars = sum(len(t) for _, t in corpus)
    times = [index.check(text).seconds * 1000 for _, text in queries]
    print(f"pieces indexed: {len(index)} ({chars / 1e6:.1f} M chars; {len(index.failed)} failed); read {read_s:.1f} s")
    print(f"index build: {build_s:.1f} s ({build_s / len(index) * 1000:.2f} ms/piece); "
          f"whole-bar postings {len(index.whole.postings)}, voice-bar postings {len(index.voice.postings)}")
    print(f"check: median {statistics.median(times):.2f} ms, p95 {sorted(times)[int(0.95 * len(times))]:.2f} ms, "
          f"max {max(times):.2f} ms over {len(times)} pieces (each also in the index: worst case)")


if __name__ == "__main__":
    main()
