"""NotaGen-X on a laptop CPU: our engine at fp32 / bf16 / int8 against an official-style loop, speed and memory.

Weights: random, in the official `.pth` layout under the NotaGen-X file name, opened through the same resolver as
`notagen generate --checkpoint … --precision …` (converted once into a scratch cache, then loaded memory-mapped).
Dims: NotaGen-X (hidden 1280, 20 + 6 layers, 1024 patches, 516 M parameters) and tiny (hidden 256, 4 + 2 layers).

* **ours**: `GenerationEngine` (KV caches at both levels, the model's own modules), greedy, every patch 16 chars
  (random weights never write an EOS). Steady-state time per patch round = median of the rounds after the first
  (the first includes the prefill), from the progress callback, in CPU seconds of the process (`process_time`, one
  thread: on a shared machine wall time mostly measures the neighbours).
* **official-style**: the official loop (`generate_plain` over `ReferenceNotaGen`: HF GPT-2 modules, one-hot patch
  embedding, the whole context re-run for every patch and the whole patch prefix for every char, all 16 chars),
  fp32, batch 1 (the original has no batching). One patch per cell (each patch costs the same there).
* **memory**: every (dims, precision) runs in its own process; peak RSS (`ru_maxrss`) after loading, after a
  batch-1 piece at context 16 and at context 1008, and after the batch-8 cells; the baseline is the RSS with torch
  and notagen imported, before any weights.
* **bandwidth limit**: bytes a patch round must read (patch-decoder weights once, char-decoder weights once per
  char, the patch KV cache) divided by the read bandwidth of one thread, measured in a separate process just before
  each measuring process (the best of the two around it), so its buffer never counts in a peak.

    python benchmarks/official_weights.py [--quick] [--dims x tiny] [--precisions fp32 bf16 int8]
        [--contexts 16 256 1008] [--patches 3] [--no-official-1008]

Writes benchmarks/results/official_weights.json and prints tables. The default run takes about 30-40 minutes on
one core (NotaGen-X fp32 official-style at context 1008 alone is ~25 s per patch, and every batch-8 cell at 1008
prefills 8 rows of 1008 patches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's notagen, also in the children
RESULTS = Path(__file__).parent / "results" / "official_weights.json"
DIMS = {
    "x": dict(patch_length=1024, patch_layers=20, char_layers=6, hidden_size=1280, dropout=0.0),
    "tiny": dict(patch_length=1024, patch_layers=4, char_layers=2, hidden_size=256, dropout=0.0),
}
X_FILE = "weights_notagenx_p_size_16_p_length_1024_p_layers_20_h_size_1280.pth"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def context_text(patches: int, patchilizer) -> str:
    """A continuation whose `encode_generate` gives exactly `patches` full patches (see generate_speed.py)."""
    from notagen.generation.engine import split_context

    lines = ["[V:1]cdefgabc|\n"] * (patches - 5) + ["[V:1]cdefgabcd|\n"]
    text = "L:1/8\nM:4/4\nK:C\n" + "".join(lines)
    full, prefix = split_context(patchilizer.encode_generate(text), patchilizer.patch_size)
    assert len(full) == patches and not prefix, (len(full), prefix)
    return text


def read_bandwidth() -> float:
    """Bytes/s one thread reads from memory (sum over a 512 MB tensor, best of 5)."""
    import torch

    data = torch.ones(128 * 1024 * 1024)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    del data
    return 512 * 1024 * 1024 / best


# -- children -------------------------------------------------------------------------------------------------


def child_prepare(args: argparse.Namespace) -> dict:
    """Write the official-layout file with random weights, and convert it once per precision."""
    import torch

    from notagen.checkpoint import export_official
    from notagen.config import ModelConfig
    from notagen.model import NotaGenModel
    from notagen.weights import open_checkpoint

    path = Path(args.weights)
    if not path.is_file():
        torch.manual_seed(0)
        model = NotaGenModel(ModelConfig(**DIMS[args.dims])).eval()
        export_official(model, path)
        del model
    seconds = {}
    for precision in args.precisions:
        start = time.perf_counter()
        open_checkpoint(path, precision=precision)
        seconds[precision] = time.perf_counter() - start
    return {"convert_seconds": seconds, "peak_rss_mb": rss_mb()}


def child_ours(args: argparse.Namespace) -> dict:
    import torch

    from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
    from notagen.patchilizer import Patchilizer
    from notagen.weights import open_checkpoint

    baseline = rss_mb()
    start = time.perf_counter()
    loaded = open_checkpoint(args.weights, precision=args.precision)
    load_seconds = time.perf_counter() - start
    model, config = loaded.model, loaded.config
    engine = GenerationEngine(model)
    patchilizer = Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
    after_load = rss_mb()
    greedy = SamplingSettings(top_k=1)
    bytes_per_param = {"fp32": 4, "bf16": 2, "int8": 1}[args.precision]
    kv_bytes = 2 if args.precision == "bf16" else 4
    h = config.hidden_size
    patch_block = config.patch_layers * 12 * h * h
    char_block = config.char_layers * 12 * h * h + 128 * h  # + the tied LM head, read per char

    def measure(context: int, batch: int) -> dict:
        text = context_text(context, patchilizer)
        requests = [PieceRequest(text, seed=i) for i in range(batch)]
        stamps: list[float] = []
        engine.generate(requests, greedy, GenerationLimits(max_patches=args.patches + 1), batch_size=batch,
                        progress=lambda _: stamps.append(time.process_time()))
        rounds = [b - a for a, b in zip(stamps, stamps[1:])]
        seconds = statistics.median(rounds)
        read = (patch_block + 16 * char_block) * bytes_per_param \
            + batch * config.patch_layers * 2 * (context + 1) * h * kv_bytes
        return {"context": context, "batch": batch, "ms_per_patch": seconds * 1e3,
                "chars_per_s": 16 * batch / seconds, "rounds_ms": [r * 1e3 for r in rounds],
                "bytes_per_patch": read}

    cells, peaks = [], {}
    for batch in (1, 8):
        for context in args.contexts:
            cells.append(measure(context, batch))
            print(f"  {args.dims} {args.precision} ctx {context} batch {batch}: "
                  f"{cells[-1]['ms_per_patch']:.1f} ms/patch", file=sys.stderr, flush=True)
            if batch == 1:
                peaks[f"batch1_ctx{context}"] = rss_mb()
        peaks[f"batch{batch}"] = rss_mb()
    bandwidth = args.bandwidth
    for cell in cells:
        cell["bandwidth_limit_ms"] = cell["bytes_per_patch"] / bandwidth * 1e3
        cell["over_limit"] = cell["ms_per_patch"] / cell["bandwidth_limit_ms"]
    return {"precision": args.precision, "dims": args.dims, "weight_bytes": loaded.info["weight_bytes"],
            "parameters": loaded.info["parameters"], "load_seconds": load_seconds, "baseline_rss_mb": baseline,
            "after_load_rss_mb": after_load, "peak_rss_mb": peaks, "read_bandwidth_gb_s": bandwidth / 1e9,
            "load_rss_note": "after_load counts only the pages touched while loading (float weights are mapped)",
            "cells": cells, "threads": torch.get_num_threads()}


def child_official(args: argparse.Namespace) -> dict:
    import torch

    from notagen.generation import GenerationLimits, PieceRequest, SamplingSettings
    from notagen.generation.reference import ReferenceNotaGen, generate_plain
    from notagen.patchilizer import Patchilizer
    from notagen.weights import open_checkpoint

    loaded = open_checkpoint(args.weights)
    reference = ReferenceNotaGen.from_model(loaded.model)
    del loaded
    config = reference.config
    patchilizer = Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
    greedy = SamplingSettings(top_k=1)
    cells = []
    for context in args.contexts:
        text = context_text(context, patchilizer)
        patches = 1 if config.hidden_size >= 1024 or context > 16 else 3
        start = time.process_time()
        generate_plain(reference, [PieceRequest(text)], greedy, GenerationLimits(max_patches=patches), patchilizer)
        seconds = (time.process_time() - start) / patches
        cells.append({"context": context, "batch": 1, "ms_per_patch": seconds * 1e3, "chars_per_s": 16 / seconds,
                      "patches_timed": patches})
        print(f"  {args.dims} official-style ctx {context}: {seconds:.2f} s/patch", file=sys.stderr, flush=True)
    return {"dims": args.dims, "cells": cells, "peak_rss_mb": rss_mb(), "threads": torch.get_num_threads()}


def child_interleaved(args: argparse.Namespace) -> dict:
    """The goal ratios measured side by side in one process, alternating (load drift hits all three alike):
    our fp32 and int8 engines and the official-style loop at the first context, batch 1."""
    from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
    from notagen.generation.reference import ReferenceNotaGen, generate_plain
    from notagen.patchilizer import Patchilizer
    from notagen.weights import open_checkpoint

    fp32 = open_checkpoint(args.weights).model
    int8 = open_checkpoint(args.weights, precision="int8").model
    official = ReferenceNotaGen.from_model(fp32)
    config = fp32.config
    patchilizer = Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
    text = context_text(args.contexts[0], patchilizer)
    greedy = SamplingSettings(top_k=1)

    def ours(model) -> float:
        stamps: list[float] = []
        GenerationEngine(model).generate([PieceRequest(text)], greedy, GenerationLimits(max_patches=args.patches + 1),
                                         progress=lambda _: stamps.append(time.process_time()))
        return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))

    def plain() -> float:
        start = time.process_time()
        generate_plain(official, [PieceRequest(text)], greedy, GenerationLimits(max_patches=1), patchilizer)
        return time.process_time() - start

    times: dict[str, list[float]] = {"fp32": [], "int8": [], "official-style": []}
    for _ in range(args.repeats):
        times["fp32"].append(ours(fp32))
        times["int8"].append(ours(int8))
        times["official-style"].append(plain())
    best = {name: min(values) * 1e3 for name, values in times.items()}
    print(f"  {args.dims} interleaved ctx {args.contexts[0]}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in best.items()),
          file=sys.stderr, flush=True)
    return {"context": args.contexts[0], "repeats": args.repeats, "ms_per_patch_best": best,
            "ms_per_patch_all": {k: [v * 1e3 for v in values] for k, values in times.items()},
            "int8_over_fp32": best["fp32"] / best["int8"], "int8_over_official": best["official-style"] / best["int8"]}


def child_bandwidth(args: argparse.Namespace) -> dict:
    return {"bytes_per_s": read_bandwidth()}


CHILDREN = {"prepare": child_prepare, "ours": child_ours, "official": child_official, "bandwidth": child_bandwidth,
            "interleaved": child_interleaved}


def run_child(kind: str, env: dict, **options) -> dict:
    command = [sys.executable, __file__, "--child", kind]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        command += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"child {kind} {options} failed with exit code {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------------------


def report(results: dict) -> dict:
    """Tables and the goals, from one run's results."""
    goals = {}
    for dims, data in results["dims"].items():
        ours = {run["precision"]: {(c["context"], c["batch"]): c for c in run["cells"]} for run in data["ours"]}
        official = {c["context"]: c for c in data.get("official", {}).get("cells", [])}
        print(f"\n### {dims} dims ({data['ours'][0]['parameters'] / 1e6:.1f} M parameters), one thread")
        print("| precision | context | batch | ms/patch | chars/s | bandwidth limit ms | x limit | vs official-style |")
        print("|---|---|---|---|---|---|---|---|")
        for precision, cells in ours.items():
            for (context, batch), cell in sorted(cells.items(), key=lambda item: (item[0][1], item[0][0])):
                ratio = ""
                if batch == 1 and context in official:
                    ratio = f"{official[context]['ms_per_patch'] / cell['ms_per_patch']:.1f}x"
                print(f"| {precision} | {context} | {batch} | {cell['ms_per_patch']:.1f} | {cell['chars_per_s']:.0f}"
                      f" | {cell['bandwidth_limit_ms']:.1f} | {cell['over_limit']:.2f} | {ratio} |")
        for context, cell in sorted(official.items()):
            print(f"| official-style fp32 | {context} | 1 | {cell['ms_per_patch']:.0f} | {cell['chars_per_s']:.1f} |"
                  f" | | 1.0x |")
        print("\n| precision | weight MB | baseline RSS MB | peak RSS MB: loaded / b1 ctx16 / b1 ctx1008 / b8 |"
              " peak / weights | (peak - baseline) / weights |")
        print("|---|---|---|---|---|---|")
        for run in data["ours"]:
            weights = run["weight_bytes"] / 2**20
            peaks = run["peak_rss_mb"]
            worst_b1 = max(v for k, v in peaks.items() if k.startswith("batch1_"))
            print(f"| {run['precision']} | {weights:.0f} | {run['baseline_rss_mb']:.0f} | "
                  f"{run['after_load_rss_mb']:.0f} / {peaks.get('batch1_ctx16', 0):.0f} / "
                  f"{peaks.get('batch1_ctx1008', 0):.0f} / {peaks.get('batch8', 0):.0f} | "
                  f"{worst_b1 / weights:.2f} | {(worst_b1 - run['baseline_rss_mb']) / weights:.2f} |")
            run["peak_over_weights_batch1"] = worst_b1 / weights
            run["model_peak_over_weights_batch1"] = (worst_b1 - run["baseline_rss_mb"]) / weights
        if dims == "x" and "int8" in ours and "fp32" in ours:
            int8, fp32 = ours["int8"], ours["fp32"]
            if (16, 1) in int8 and (16, 1) in fp32:
                goals["x int8 >= 3x our fp32 at context 16"] = fp32[16, 1]["ms_per_patch"] / int8[16, 1]["ms_per_patch"]
            for context, target in ((16, 10), (1008, 30)):
                if context in official and (context, 1) in int8:
                    goals[f"x int8 >= {target}x official-style at context {context}"] = (
                        official[context]["ms_per_patch"] / int8[context, 1]["ms_per_patch"])
            for run in data["ours"]:
                goals[f"x {run['precision']} peak RSS (batch 1) <= 1.3x weights"] = run["peak_over_weights_batch1"]
                goals[f"x {run['precision']} peak RSS above the torch baseline (batch 1) <= 1.3x weights"] = \
                    run["model_peak_over_weights_batch1"]
        if "interleaved" in data:
            side = data["interleaved"]
            best = side["ms_per_patch_best"]
            print(f"\nside by side in one process, context {side['context']}, batch 1, best of {side['repeats']}: "
                  + ", ".join(f"{name} {ms:.0f} ms/patch" for name, ms in best.items()))
            goals["x int8 >= 3x our fp32 at context 16 (interleaved)"] = side["int8_over_fp32"]
            goals["x int8 >= 10x official-style at context 16 (interleaved)"] = side["int8_over_official"]
    print()
    for name, value in goals.items():
        target = float(name.split(">=" if ">=" in name else "<=")[1].split("x")[0])
        ok = value <= target if "<=" in name else value >= target
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value:.2f}")
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--dims", nargs="+", default=["x", "tiny"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--contexts", nargs="+", type=int, default=[16, 256, 1008])
    parser.add_argument("--patches", type=int, default=3, help="steady-state patch rounds timed per cell")
    parser.add_argument("--weights", default="")
    parser.add_argument("--bandwidth", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3, help="alternations in the interleaved goal check")
    parser.add_argument("--interleaved-only", action="store_true",
                        help="run only the interleaved goal check (NotaGen-X, context 16) and add it to the results")
    parser.add_argument("--workdir", default="", help="scratch folder for weights and converted copies")
    parser.add_argument("--quick", action="store_true", help="contexts 16 and 256, 2 patches, tiny dims only")
    parser.add_argument("--no-official-1008", action="store_true",
                        help="skip the official-style loop at context 1008 with NotaGen-X dims (~25 s per patch)")
    args = parser.parse_args()

    if args.child:
        import torch

        torch.set_num_threads(1)
        args.dims = args.dims[0]
        print(json.dumps(CHILDREN[args.child](args)))
        return

    if args.quick:
        args.dims, args.contexts, args.patches = ["tiny"], [16, 256], 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="notagen-bench-"))
    env = dict(os.environ, NOTAGEN_CACHE_DIR=str(workdir / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if args.interleaved_only:
        results = json.loads(RESULTS.read_text())
        results["dims"]["x"]["interleaved"] = run_child("interleaved", env, dims="x", weights=workdir / "x" / X_FILE,
                                                        contexts=[16], patches=args.patches, repeats=args.repeats)
        results["goals"] = report(results)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")
        return
    results: dict = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                     "python": platform.python_version(), "threads": 1, "timer": "process CPU time",
                     "patches_per_cell": args.patches, "dims": {}}
    import torch

    from notagen.precision import bf16_is_native

    results["torch"] = torch.__version__
    results["bf16_native"] = bf16_is_native()
    for dims in args.dims:
        weights = workdir / dims / X_FILE
        weights.parent.mkdir(parents=True, exist_ok=True)
        print(f"{dims}: writing random official-layout weights and converting them", file=sys.stderr, flush=True)
        data = {"prepare": run_child("prepare", env, dims=dims, weights=weights, precisions=args.precisions)}
        data["ours"] = []
        for precision in args.precisions:
            bandwidth = run_child("bandwidth", env, dims=dims)["bytes_per_s"]
            data["ours"].append(run_child("ours", env, dims=dims, weights=weights, precision=precision,
                                          contexts=args.contexts, patches=args.patches, bandwidth=bandwidth))
            after = run_child("bandwidth", env, dims=dims)["bytes_per_s"]
            if after > bandwidth:  # the least contended of the two: the limit is a lower bound on the time
                for cell in data["ours"][-1]["cells"]:
                    cell["bandwidth_limit_ms"] *= bandwidth / after
                    cell["over_limit"] = cell["ms_per_patch"] / cell["bandwidth_limit_ms"]
                data["ours"][-1]["read_bandwidth_gb_s"] = after / 1e9
        contexts = [c for c in args.contexts if not (dims == "x" and c == 1008 and args.no_official_1008)]
        data["official"] = run_child("official", env, dims=dims, weights=weights, contexts=contexts)
        if dims == "x":
            data["interleaved"] = run_child("interleaved", env, dims=dims, weights=weights, contexts=[16],
                                            patches=args.patches, repeats=args.repeats)
        results["dims"][dims] = data
    results["goals"] = report(results)
    out = RESULTS.with_suffix(".quick.json") if args.quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} (scratch files in {workdir}; delete them when done)")


if __name__ == "__main__":
    main()
