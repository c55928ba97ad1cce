"""What bf16 and int8 cost in quality: next-char distributions and perplexity against fp32, on held-out pieces.

For every predicted character of every piece (teacher forcing, the whole piece through the model's own modules, as
`notagen eval` computes perplexity): top-1 agreement of the next-char distribution with fp32, mean KL(fp32 || low)
in nats, and the perplexity at each precision. Models:

* `mini`: the bundled notagen-mini (real trained weights), opened through the resolver at each precision.
* `x`: random weights in the official `.pth` layout at NotaGen-X dims (516 M parameters). Random weights say little
  about how sensitive a *trained* model is: its distributions are nearly flat (perplexity ≈ vocabulary size), so
  top-1 agreement there is dominated by near-ties. The figure is a check that the int8 path is wired right at full
  size, not a quality estimate for the real NotaGen-X.

Pieces: the eval split of `--reference DATASET` (a `notagen data build` folder; prompts included), else the ABC
fixtures of the test suite. NotaGen-X dims run on the first `--x-pieces` pieces cut to `--x-patches` patches.

    python benchmarks/precision_quality.py [--reference DATASET] [--pieces 40] [--x-weights FILE.pth]

Writes benchmarks/results/precision_quality.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's notagen

import torch  # noqa: E402

from notagen.patchilizer import Patchilizer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "precision_quality.json"
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
X_FILE = "weights_notagenx_p_size_16_p_length_1024_p_layers_20_h_size_1280.pth"


def texts_of(reference: str | None, limit: int) -> tuple[str, list[str]]:
    if reference:
        from notagen.data.dataset import ScoreDataset

        dataset = ScoreDataset(Path(reference), split="eval")
        return f"{reference} (eval split)", [dataset.text(i, prompt=True) for i in range(min(len(dataset), limit))]
    files = sorted(FIXTURES.glob("*.abc"))[:limit]
    return "tests/fixtures/*.abc", [path.read_text(encoding="utf-8") for path in files]


def next_char_log_probs(model, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-probabilities [M, P, V] of every next char, targets [M, P], real-target mask [M, P])."""
    masks = torch.ones(patches.shape[:2], dtype=torch.long)
    vectors, targets = model.char_targets(patches, masks)
    hidden = model.char_level_decoder.hidden(vectors, targets[:, :-1])
    log_probs = torch.log_softmax(model.char_level_decoder.logits(hidden).float(), dim=-1)
    return log_probs, targets, targets != 0


def compare(name: str, spec: str, precisions: list[str], pieces: list[list[list[int]]]) -> dict:
    from notagen.weights import open_checkpoint

    models = {p: open_checkpoint(spec, precision=p).model for p in ["fp32", *precisions]}
    stats = {p: {"agree": 0, "kl": 0.0, "nll": 0.0} for p in models}
    chars = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for piece in pieces:
            patches = torch.tensor([piece], dtype=torch.long)
            reference, targets, real = next_char_log_probs(models["fp32"], patches)
            chars += int(real.sum())
            top = reference.argmax(-1)
            for precision, model in models.items():
                log_probs = reference if precision == "fp32" else next_char_log_probs(model, patches)[0]
                picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                kl = (reference.exp() * (reference - log_probs)).sum(-1)
                stats[precision]["agree"] += int(((log_probs.argmax(-1) == top) & real).sum())
                stats[precision]["kl"] += float((kl * real).sum())
                stats[precision]["nll"] += -float((picked * real).sum())
    base = stats["fp32"]["nll"] / chars
    rows = {}
    for precision, s in stats.items():
        nll = s["nll"] / chars
        rows[precision] = {"top1_agreement": s["agree"] / chars, "mean_kl_nats": s["kl"] / chars,
                           "nll_per_char": nll, "perplexity": float(torch.tensor(nll).exp()),
                           "perplexity_change": float(torch.tensor(nll - base).exp()) - 1}
    return {"model": name, "spec": spec, "pieces": len(pieces), "chars": chars,
            "seconds": time.perf_counter() - started, "precisions": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=None, help="dataset folder whose eval split is used")
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--x-weights", default="", help="official-layout .pth at NotaGen-X dims (default: random)")
    parser.add_argument("--x-pieces", type=int, default=6)
    parser.add_argument("--x-patches", type=int, default=64)
    parser.add_argument("--skip-x", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NOTAGEN_CACHE_DIR", tempfile.mkdtemp(prefix="notagen-quality-"))

    source, texts = texts_of(args.reference, args.pieces)
    results = {"pieces_from": source, "torch": torch.__version__, "threads": args.threads, "models": []}
    from notagen.checkpoint import default_checkpoint_path, load_checkpoint

    mini = default_checkpoint_path()
    config = load_checkpoint(mini).config
    patchilizer = Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
    pieces = [patchilizer.encode_train(text, rng=random.Random(0)) for text in texts]
    results["models"].append(compare("notagen-mini (trained)", str(mini), args.precisions, pieces))
    print(f"mini done in {results['models'][-1]['seconds']:.0f} s", file=sys.stderr, flush=True)

    if not args.skip_x:
        weights = Path(args.x_weights) if args.x_weights else None
        if weights is None:
            from notagen.checkpoint import export_official
            from notagen.config import ModelConfig
            from notagen.model import NotaGenModel

            torch.manual_seed(0)
            weights = Path(tempfile.mkdtemp(prefix="notagen-quality-x-")) / X_FILE
            export_official(NotaGenModel(ModelConfig.preset("x", dropout=0.0)), weights)
        x_patchilizer = Patchilizer(patch_size=16, patch_length=1024)
        x_pieces = [x_patchilizer.encode_train(text, rng=random.Random(0))[: args.x_patches]
                    for text in texts[: args.x_pieces]]
        results["models"].append(compare("NotaGen-X dims, random weights", str(weights), args.precisions, x_pieces))

    print("\n| model | precision | pieces | chars | top-1 agreement | mean KL (nats) | perplexity | change |")
    print("|---|---|---|---|---|---|---|---|")
    for model in results["models"]:
        for precision, row in model["precisions"].items():
            print(f"| {model['model']} | {precision} | {model['pieces']} | {model['chars']} | "
                  f"{row['top1_agreement'] * 100:.2f} % | {row['mean_kl_nats']:.2e} | {row['perplexity']:.4f} | "
                  f"{row['perplexity_change'] * 100:+.2f} % |")
    goals = {}
    for model in results["models"]:
        if "int8" in model["precisions"]:
            row = model["precisions"]["int8"]
            goals[f"{model['model']}: int8 top-1 agreement >= 99 %"] = row["top1_agreement"] >= 0.99
            goals[f"{model['model']}: int8 perplexity within 1 %"] = abs(row["perplexity_change"]) <= 0.01
    for name, ok in goals.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    results["goals"] = goals
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
