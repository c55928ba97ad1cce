"""Generation speed: the cached engine against the plain recompute-everything loop, on identical random weights.

Model dims as in the reference measurement: hidden 256, 4 patch layers, 2 char layers,
patch_length 1024. Greedy decoding (so both loops write the same characters; random weights never write an EOS, so
every patch has 16 chars). Time per patch is measured in the steady state: (t(K2 patches) - t(K1 patches)) / (K2 - K1)
from the same context, so the one-off prefill is excluded. Times are CPU seconds of this process
(`time.process_time`) with one torch thread by default: on a shared machine wall-clock time mostly measures the
neighbours.

    python benchmarks/generate_speed.py [--threads 2] [--quick] [--x-patches 3]

Writes benchmarks/results/generate_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from notagen.config import ModelConfig
from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
from notagen.generation.engine import split_context
from notagen.generation.reference import generate_plain
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer

RESULTS = Path(__file__).parent / "results" / "generate_speed.json"
# The official code at these dims (transformers GPT-2, no cache), as measured with it: ms per patch.
REFERENCE_PUBLISHED_MS = {16: 92.0, 1008: 347.0}
GREEDY = SamplingSettings(top_k=1, strict=False)  # the engine's own speed: no constraints


def context_text(patches: int, patchilizer: Patchilizer) -> str:
    """A continuation context whose `encode_generate` gives exactly `patches` full patches (no forced prefix).

    BOS + 3 header lines = 4 patches; every 15-char body line is one patch (its EOS fills the 16th slot); the last
    line has 16 chars, so it fills a patch without an EOS and leaves no forced prefix.
    """
    lines = ["[V:1]cdefgabc|\n"] * (patches - 5) + ["[V:1]cdefgabcd|\n"]
    text = "L:1/8\nM:4/4\nK:C\n" + "".join(lines)
    full, prefix = split_context(patchilizer.encode_generate(text), patchilizer.patch_size)
    assert len(full) == patches and not prefix, (len(full), prefix)
    return text


def timed(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def per_patch(generate, k1: int, k2: int, repeats: int = 3) -> float:
    """Steady-state seconds per patch: best of `repeats` of (t(k2) - t(k1)) / (k2 - k1)."""
    best = float("inf")
    for _ in range(repeats):
        t1 = timed(lambda: generate(k1))
        t2 = timed(lambda: generate(k2))
        best = min(best, max(t2 - t1, 1e-9) / (k2 - k1))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer patches per measurement")
    parser.add_argument("--x-patches", type=int, default=3, help="patches timed with the x preset (0 = skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = ModelConfig(patch_length=1024, patch_layers=4, char_layers=2, hidden_size=256, dropout=0.0)
    model = NotaGenModel(config).eval()
    patchilizer = Patchilizer(patch_size=16, patch_length=1024)
    engine = GenerationEngine(model, patchilizer)

    def engine_run(text: str, batch: int = 1):
        requests = [PieceRequest(text, seed=i) for i in range(batch)]
        return lambda k: engine.generate(requests, GREEDY, GenerationLimits(max_patches=k), batch_size=batch)

    def plain_run(text: str):
        return lambda k: generate_plain(model, [PieceRequest(text)], GREEDY, GenerationLimits(max_patches=k),
                                        patchilizer)

    rows = []
    for context in (16, 512, 1008):
        text = context_text(context, patchilizer)
        actual = len(split_context(patchilizer.encode_generate(text), 16)[0])
        k1, k2 = (2, 6) if args.quick else (4, 12)
        engine_s = per_patch(engine_run(text), k1, k2)
        pk1, pk2 = (1, 3) if context > 16 else (k1, k2)
        plain_s = per_patch(plain_run(text), pk1, pk2, repeats=1 if context > 16 else 2)
        rows.append({"context": actual, "engine_ms_per_patch": engine_s * 1e3, "plain_ms_per_patch": plain_s * 1e3,
                     "speedup": plain_s / engine_s, "engine_chars_per_s": 16 / engine_s,
                     "plain_chars_per_s": 16 / plain_s})
        print(f"context {actual:5d}: engine {engine_s * 1e3:7.2f} ms/patch, plain {plain_s * 1e3:8.2f} ms/patch, "
              f"x{plain_s / engine_s:6.1f}", flush=True)

    text = context_text(16, patchilizer)
    k1, k2 = (2, 6) if args.quick else (4, 12)
    batch1 = per_patch(engine_run(text, 1), k1, k2)
    batch8 = per_patch(engine_run(text, 8), k1, k2)
    throughput = {"batch1_chars_per_s": 16 / batch1, "batch8_chars_per_s": 8 * 16 / batch8,
                  "batch8_over_batch1": 8 * batch1 / batch8}
    print(f"batch 1: {16 / batch1:8.0f} chars/s; batch 8: {8 * 16 / batch8:8.0f} chars/s "
          f"(x{throughput['batch8_over_batch1']:.1f})", flush=True)

    x_result = None
    if args.x_patches > 0:
        del engine, model
        x_config = ModelConfig.preset("x", dropout=0.0)
        x_model = NotaGenModel(x_config).eval()
        x_engine = GenerationEngine(x_model)
        x_text = context_text(16, Patchilizer(patch_size=16, patch_length=x_config.patch_length))
        run = lambda k: x_engine.generate([PieceRequest(x_text)], GREEDY, GenerationLimits(max_patches=k))  # noqa: E731
        x_seconds = per_patch(run, 1, 1 + args.x_patches, repeats=1)
        x_result = {"params": x_model.num_parameters(), "seconds_per_patch": x_seconds, "context": 16}
        print(f"x preset ({x_model.num_parameters() / 1e6:.1f} M params): {x_seconds:.2f} s/patch at context 16",
              flush=True)

    flat = rows[-1]["engine_ms_per_patch"] / rows[0]["engine_ms_per_patch"]
    targets = {
        "speedup_at_16 >= 10": rows[0]["speedup"] >= 10,
        "speedup_at_1008 >= 30": rows[-1]["speedup"] >= 30,
        "flat_time_per_patch <= 1.3": flat <= 1.3,
        "batch8_throughput >= 4x": throughput["batch8_over_batch1"] >= 4,
    }
    print("\n| context | engine CPU ms/patch | plain CPU ms/patch | speed-up | engine chars/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['context']} | {row['engine_ms_per_patch']:.2f} | {row['plain_ms_per_patch']:.1f} | "
              f"{row['speedup']:.1f}x | {row['engine_chars_per_s']:.0f} |")
    print(f"\nengine time per patch 1008 / 16: {flat:.2f}")
    published = {str(ctx): {"reference_ms": ms, "engine_ms": row["engine_ms_per_patch"],
                            "speedup": ms / row["engine_ms_per_patch"]}
                 for ctx, ms in REFERENCE_PUBLISHED_MS.items() for row in rows if row["context"] == ctx}
    for ctx, item in published.items():
        print(f"vs the official code's published {item['reference_ms']:.0f} ms/patch at context {ctx}: "
              f"x{item['speedup']:.1f}")
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    report = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "timer": "process CPU time", "cpu_count": os.cpu_count(),
              "threads": args.threads, "model": config.to_dict(), "sampling": "greedy (top_k=1)", "rows": rows,
              "flat_ratio_1008_over_16": flat, "throughput": throughput,
              "vs_published_reference": published, "x_preset": x_result, "targets": targets}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
