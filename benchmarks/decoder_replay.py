"""Does strict decoding allow what the training scores write? Each piece's training text is written again through
`StrictDecoder` exactly as the engine writes a piece: patch by patch, every character asked `allows` at its patch
position, then `accept`ed. A piece passes when the decoder allows every character; otherwise the first refused
character, what came before it and the decoder's phase are recorded.

Where the decoder refuses what the model learnt, it steers the rest of the piece, so this is the measure of how far
strict decoding bends a model away from its training. (A `StrictDecoder(text)` replay is not: it reads a given
score leniently, as a continuation, and lets through lengths, tokens and keys the decoder never writes.)

    python benchmarks/decoder_replay.py DATASET [--collections bach palestrina] [--limit 200]

Writes benchmarks/results/decoder_replay.json and prints a table per collection with the commonest refusals.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from notagen.abc.text import body_start
from notagen.config import EOS_ID
from notagen.data.dataset import ScoreDataset
from notagen.generation.constraints import StrictDecoder, write_through
from notagen.patchilizer import add_stream_annotations, split_lines

RESULTS = Path(__file__).parent / "results" / "decoder_replay.json"


def first_refusal(text: str) -> tuple[float, tuple[str, str, str] | None]:
    """Write `text` (prompt lines, then the piece) through the decoder: (the share of its characters written before
    the first refusal, None when every character is allowed, else (the text before the refused character, the
    character, the decoder's phase))."""
    lines = split_lines(text)
    # the prompt is given (as `notagen generate` gives it); the decoder writes from `%end` on
    prompt_end = next((index for index, line in enumerate(lines) if line.startswith("%end")), 0)
    start = body_start(lines)
    context = "".join(lines[:prompt_end])
    piece = "".join(lines[prompt_end:start] + add_stream_annotations(lines[start:]))
    decoder = StrictDecoder(context)
    written, refused = write_through(decoder, context, piece)
    if refused is None:
        return 1.0, None
    before = "".join(chr(char) if char > EOS_ID else "¶" for char in written[-50:])
    shown = chr(refused) if refused > EOS_ID else "<EOS>"
    return sum(char > EOS_ID for char in written) / len(piece), (before, shown, decoder.phase)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="train", choices=("train", "eval"))
    parser.add_argument("--collections", nargs="*", default=None, help="only these collections (default: all)")
    parser.add_argument("--limit", type=int, default=200, help="at most this many pieces per collection (0: all)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    dataset = ScoreDataset(args.dataset, split=args.split)
    chosen: dict[str, list[int]] = {}
    for index, record in enumerate(dataset.records):
        collection = record.get("collection", "?")
        if args.collections and collection not in args.collections:
            continue
        picked = chosen.setdefault(collection, [])
        if not args.limit or len(picked) < args.limit:
            picked.append(index)

    results: dict[str, dict] = {}
    for collection, indices in sorted(chosen.items()):
        refusals: Counter[str] = Counter()
        examples: dict[str, str] = {}
        passed, followed = 0, 0.0
        for index in tqdm(indices, desc=collection, leave=False):
            share, refusal = first_refusal(dataset.text(index, prompt=True))
            followed += share
            if refusal is None:
                passed += 1
                continue
            before, char, phase = refusal
            reason = f"{char!r} in {phase}"
            refusals[reason] += 1
            examples.setdefault(reason, f"{dataset.records[index]['id']}: …{before}")
        results[collection] = {"pieces": len(indices), "passed": passed, "followed": followed / len(indices),
                               "refusals": dict(refusals.most_common()),
                               "examples": examples}

    print("| collection | pieces | pass whole | text followed | commonest refusals (first refused character, decoder "
          "phase) |")
    print("|---|---|---|---|---|")
    for collection, entry in results.items():
        top = "; ".join(f"{reason} ×{count}" for reason, count in list(entry["refusals"].items())[:3])
        share = entry["passed"] / entry["pieces"]
        print(f"| {collection} | {entry['pieces']} | {entry['passed']} ({share:.0%}) | {entry['followed']:.0%} | "
              f"{top or '–'} |")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"dataset": str(args.dataset), "split": args.split, "limit": args.limit,
                                        "collections": results}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
