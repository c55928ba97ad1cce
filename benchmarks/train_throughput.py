"""Training throughput: target characters per second and peak memory per model preset, and DDP scaling.

Runs the real trainer (`notagen.train.loop.Trainer`) on a synthetic dataset folder whose pieces fill the whole
patch context, so every step trains batch × (patches - 1) × 16 target characters. Each measurement runs in its own
process so peak memory (RSS on CPU, `max_memory_allocated` on CUDA) belongs to that preset alone.

* CPU: tiny and mini; DDP scaling 1 → 2 processes (gloo, same global batch) on tiny and mini.
* CUDA (when available): every preset, bf16 autocast.

    python benchmarks/train_throughput.py                # writes benchmarks/results/train_throughput.json
    python benchmarks/train_throughput.py --presets mini --steps 8 --batch-size 4
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
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "train_throughput.json"
KEYS = ("Cb", "C", "C#", "Db", "D", "Eb", "E", "F", "F#", "Gb", "G", "Ab", "A", "Bb", "B")


def synthetic_piece(bars: int, voices: int = 2) -> str:
    """A plausible interleaved piece: header, then one line per bar holding every voice."""
    header = ["%%score { 1 | 2 }", "L:1/8", "M:4/4", "K:C", 'V:1 treble nm="Violin"', 'V:2 bass nm="Cello"']
    patterns = ["cdef gabc'", "E2G2 c2e2", "d2B2 G2B2", "A,2C2 E2A2"]
    lines = []
    for bar in range(bars):
        lines.append("".join(f"[V:{v + 1}]{patterns[(bar + v) % len(patterns)]}|" for v in range(voices)))
    return "\n".join(header + lines) + "\n"


def make_dataset(root: Path, pieces: int, bars: int) -> Path:
    (root / "pieces").mkdir(parents=True, exist_ok=True)
    text = synthetic_piece(bars)
    records = []
    for index in range(pieces):
        piece_id = f"synthetic_{index:03d}"
        (root / "pieces" / f"{piece_id}.json").write_text(
            json.dumps({"standard": text, "interleaved": text, "keys": {key: text for key in KEYS}}))
        records.append({"id": piece_id, "source": "synthetic", "collection": "synthetic", "licence": "none",
                        "labels": None, "key": "C", "bars": bars, "voices": 2, "chars": len(text),
                        "split": "train", "hash": piece_id})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process: print one JSON line."""
    import torch

    from notagen.config import ModelConfig
    from notagen.train.loop import Trainer
    from notagen.train.recipe import load_recipe

    torch.set_num_threads(args.threads)
    patch_length = min(args.patches or 10**9, ModelConfig.preset(args.preset).patch_length)
    with tempfile.TemporaryDirectory() as tmp:
        # 4 patches per bar line (2 voices × 2 units) is plenty: pieces are cut to the context.
        dataset = make_dataset(Path(tmp) / "data", pieces=8, bars=patch_length)
        overrides = [f"dataset={dataset}", f"output_dir={Path(tmp) / 'run'}", f"model.preset={args.preset}",
                     f"model.patch_length={patch_length}", "model.dropout=0.0", f"batch_size={args.batch_size}",
                     f"max_steps={args.steps}", "log_every=1", "eval_every=0", f"save_every={args.steps + 1}",
                     "progress=false", "tensorboard=false", "warmup_steps=1", f"precision={args.precision}",
                     f"activation_checkpointing={args.checkpointing}"]
        config = load_recipe(None, overrides)
        trainer = Trainer(config)
        if trainer.rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        trainer.close()
    speeds = [r["chars_per_s"] for r in records if "chars_per_s" in r][args.warmup:]
    result: dict[str, Any] = {
        "preset": args.preset, "device": trainer.rt.device.type, "processes": trainer.rt.world,
        "precision": trainer.precision, "batch_size": args.batch_size, "patches": patch_length,
        "activation_checkpointing": args.checkpointing, "parameters": trainer.model.num_parameters(),
        "steps_measured": len(speeds), "chars_per_s": statistics.median(speeds) if speeds else None,
        "wall_s": round(wall, 2),
    }
    if trainer.rt.device.type == "cuda":
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:  # ru_maxrss is KiB on Linux, bytes on macOS
        scale = 1 if platform.system() == "Darwin" else 1024
        result["peak_memory_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)
    if trainer.rt.main:
        print("RESULT " + json.dumps(result), flush=True)


def saved_activation_gib(preset: str, patches: int = 0, checkpointing: bool = False) -> float:
    """GiB of tensors autograd saves for backward in one fp32 training forward at batch 1 × `patches`.

    Counted on the meta device with saved-tensor hooks: shapes only, no compute and no memory, so it runs for
    `large` on any machine. Parameters are excluded. The attention here is SDPA's math path (it stores the
    attention matrices); CUDA's flash / memory-efficient kernels do not, which matters at the patch level only.
    """
    import torch
    import torch.fx.experimental._config as fx_config

    from notagen.config import ModelConfig
    from notagen.model import NotaGenModel

    fx_config.meta_nonzero_assume_all_nonzero = True  # boolean-mask indexing on meta tensors (all patches real)
    config = ModelConfig.preset(preset, dropout=0.0)
    with torch.device("meta"):
        model = NotaGenModel(config)
    model.set_gradient_checkpointing(checkpointing)
    model.train()
    saved: dict[int, int] = {}

    def pack(tensor: Any) -> Any:
        if not isinstance(tensor, torch.nn.Parameter):
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    length = min(patches or config.patch_length, config.patch_length)
    inputs = torch.randint(3, 128, (1, length, config.patch_size), device="meta")
    masks = torch.ones(1, length, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs, masks, reduction="sum")  # the training loss
    return sum(saved.values()) / 2**30


def measure(preset: str, args: argparse.Namespace, processes: int = 1, precision: str = "auto") -> dict | None:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--presets", preset,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--precision", precision]
    if args.patches:
        command += ["--patches", str(args.patches)]
    if args.checkpointing:
        command.append("--checkpointing")
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", *command[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"{preset} × {processes}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=None, help="default: tiny mini on CPU, all on CUDA")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patches", type=int, default=0, help="context in patches (default: the preset's)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--cpu", action="store_true", help="hide CUDA devices")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 1 → 2 process scaling runs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.preset = args.presets[0]
        worker(args)
        return

    import torch

    from notagen.config import ModelConfig

    cuda = torch.cuda.is_available() and not args.cpu
    presets = args.presets or (["tiny", "mini", "small", "medium", "large"] if cuda else ["tiny", "mini"])
    rows = [r for preset in presets if (r := measure(preset, args)) is not None]
    scaling = []
    if not args.no_ddp:
        for preset in [p for p in presets if p in ("tiny", "mini")]:
            one = next((r for r in rows if r["preset"] == preset and r["device"] == "cpu"), None)
            if one is None:
                one = measure(preset, argparse.Namespace(**{**vars(args), "cpu": True}))
            two = measure(preset, argparse.Namespace(**{**vars(args), "cpu": True}), processes=2)
            if one and two:
                scaling.append({"preset": preset, "one_process": one["chars_per_s"],
                                "two_processes": two["chars_per_s"],
                                "speedup": round(two["chars_per_s"] / one["chars_per_s"], 2)})

    activations = []
    for preset in ("tiny", "mini", "small", "medium", "large"):
        row = {"preset": preset, "patches": min(1024, ModelConfig.preset(preset).patch_length)}
        for checkpointing in (False, True):
            gib = saved_activation_gib(preset, 1024, checkpointing)
            row["checkpointing_gib" if checkpointing else "no_checkpointing_gib"] = round(gib, 3)
        activations.append(row)

    print(f"{'preset':8} {'device':6} {'prec':5} {'batch×patches':>13} {'params':>9} {'chars/s':>10} {'peak MiB':>9}")
    for r in rows:
        shape = f"{r['batch_size']}×{r['patches']}"
        print(f"{r['preset']:8} {r['device']:6} {r['precision']:5} {shape:>13} {r['parameters'] / 1e6:8.1f}M "
              f"{r['chars_per_s']:10.0f} {r['peak_memory_mib']:9.0f}")
    for s in scaling:
        print(f"DDP gloo CPU {s['preset']}: 1 process {s['one_process']:.0f} chars/s, 2 processes "
              f"{s['two_processes']:.0f} chars/s (×{s['speedup']})")
    for a in activations:
        print(f"saved activations, fp32, batch 1 × {a['patches']} patches, {a['preset']}: "
              f"{a['no_checkpointing_gib']:.2f} GiB, with checkpointing {a['checkpointing_gib']:.2f} GiB")
    report = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if cuda else None,
        "threads_per_process": args.threads, "steps": args.steps, "warmup_steps_excluded": args.warmup,
        "results": rows, "ddp_scaling_cpu": scaling, "saved_activations_fp32_batch1": activations,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
