"""`notagen encoder train`: M3 masked-patch pre-training of a small encoder
(as CLaMP 2 trains M3, github.com/sanderwood/clamp2).

Per piece, ⌈0.45·n⌉ patches are picked (the special patches are eligible) and one corruption is drawn for the whole
piece: 80 % all picked patches become mask ids, 10 % have their characters between bos and eos shuffled, 10 % stay
unchanged. The token decoder rebuilds the original characters of the picked patches (cross-entropy). On CPU the
number of decoded patches per step is capped; the encoder still sees every corruption. Validation keeps masking on
(with a fixed draw, so eval losses are comparable across steps); the reference validates unmasked, which measures
almost nothing.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from notagen.abc.text import strip_prompt_lines
from notagen.encoder.corpus import Piece, load_pieces
from notagen.encoder.loading import load_native, save_encoder
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.encoder.patchilizer import EOS_ID, MASK_ID, PAD_ID, M3Patchilizer, crop_window
from notagen.errors import CheckpointError, ConfigError, InputError
from notagen.io import atomic_directory, atomic_path
from notagen.train.core import METRICS_FILE, trim_metrics

MASK_RATIO = 0.45


@dataclass
class Corrupted:
    inputs: torch.Tensor  # [B, N, P] what the encoder sees
    targets: torch.Tensor  # [B, N, P] the original patches
    masks: torch.Tensor  # [B, N] real patches
    selected: torch.Tensor  # [B, N] picked patches to decode


def corrupt(windows: list[np.ndarray], rng: random.Random, mask_ratio: float = MASK_RATIO,
            max_decoded: int = 0) -> Corrupted:
    """Pad a batch of patch windows and apply M3's per-piece masking; keep at most `max_decoded` picks to decode."""
    width = max(len(w) for w in windows)
    P = windows[0].shape[1]
    targets = np.zeros((len(windows), width, P), dtype=np.int64)
    masks = np.zeros((len(windows), width), dtype=np.int64)
    selected = np.zeros((len(windows), width), dtype=bool)
    for row, window in enumerate(windows):
        targets[row, :len(window)] = window
        masks[row, :len(window)] = 1
    inputs = targets.copy()
    for row, window in enumerate(windows):
        n = len(window)
        picked = rng.sample(range(n), math.ceil(mask_ratio * n))
        selected[row, picked] = True
        draw = rng.random()
        if draw < 0.8:
            inputs[row, picked] = MASK_ID
        elif draw < 0.9:
            for index in picked:
                patch = inputs[row, index]
                ends = np.nonzero((patch == EOS_ID) | (patch == PAD_ID))[0]
                end = int(ends[0]) if len(ends) else P
                middle = list(patch[1:end])
                rng.shuffle(middle)
                patch[1:end] = middle
    if max_decoded > 0 and selected.sum() > max_decoded:
        rows, cols = np.nonzero(selected)
        keep = rng.sample(range(len(rows)), max_decoded)
        selected[:] = False
        selected[rows[keep], cols[keep]] = True
    return Corrupted(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(masks),
                     torch.from_numpy(selected))


def encode_pieces(pieces: list[Piece], patchilizer: M3Patchilizer) -> list[np.ndarray]:
    """Every piece as an int8 array [n, patch_size] (special patches included, no truncation)."""
    arrays = []
    for piece in pieces:
        patches = patchilizer.encode(strip_prompt_lines(piece.text), add_special_patches=True)
        arrays.append(np.asarray(patches, dtype=np.int8))
    return arrays


def _rng_tensor(rng: random.Random) -> torch.Tensor:
    version, internal, _ = rng.getstate()
    return torch.tensor([version, *internal], dtype=torch.int64)


def _rng_from_tensor(tensor: torch.Tensor) -> random.Random:
    values = [int(v) for v in tensor.tolist()]
    rng = random.Random()
    rng.setstate((values[0], tuple(values[1:]), None))
    return rng


def _split(pieces: list[Piece], eval_pieces: int, seed: int) -> tuple[list[Piece], list[Piece]]:
    train = [p for p in pieces if p.split == "train"]
    held = [p for p in pieces if p.split != "train"]
    if not held:  # no eval split: hold out a deterministic sample
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        cut = min(eval_pieces, max(1, len(train) // 20))
        held = [train[i] for i in order[:cut]]
        train = [train[i] for i in sorted(order[cut:])]
    return train, held[:eval_pieces]


def train_encoder_command(
    data: Path,
    out: Path,
    preset: Literal["tiny", "small", "official"] = "tiny",
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 5e-4,
    warmup: int = 200,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    max_decoded: int = 96,
    patch_length: int | None = None,
    eval_every: int = 100,
    eval_pieces: int = 64,
    seed: int = 0,
    resume: bool = False,
    threads: int = 0,
    device: str = "cpu",
    name: str = "",
    progress: bool = True,
) -> int:
    """Train an M3-style music encoder by masked-patch modelling.

    Writes OUT/last and OUT/best (model.safetensors + config.json, loadable with --encoder), OUT/metrics.jsonl
    (one JSON line per logged step) and OUT/training_state.pt (optimizer and RNG state for --resume).

    Args:
        data: a built dataset folder (train/eval splits), a folder of .abc files or one .abc file.
        out: output directory.
        preset: encoder size: tiny (2x128), small (4x256) or official (12x768).
        steps: optimizer steps in total (a resumed run continues up to this number).
        batch_size: pieces per step.
        lr: peak learning rate (AdamW), reached after the warm-up and then kept.
        warmup: linear warm-up steps.
        weight_decay: AdamW weight decay.
        clip: gradient-norm clip.
        max_decoded: most picked patches decoded per step (0 = all); bounds CPU cost.
        patch_length: patches per window (default: the preset's).
        eval_every: validate and checkpoint every this many steps.
        eval_pieces: held-out pieces used for validation.
        seed: random seed (initialisation, windows, masking).
        resume: continue from OUT/last and OUT/training_state.pt.
        threads: torch CPU threads (0 = torch's default).
        device: torch device, e.g. cpu or cuda.
        name: encoder name recorded in its config (default: notagen-m3-PRESET).
        progress: show a progress bar.

    Examples:
        notagen encoder train datasets/music21 runs/encoder-small --preset small --steps 20000
    """
    if threads > 0:
        torch.set_num_threads(threads)
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ConfigError("steps, batch-size and eval-every must be positive")
    out = Path(out)
    overrides = {"patch_length": patch_length} if patch_length else {}
    config = EncoderConfig.preset(preset, **overrides)
    pieces = load_pieces(data, split=None)
    train_pieces, eval_set = _split(pieces, eval_pieces, seed)
    if not train_pieces:
        raise InputError(f"{data}: no training pieces")
    patchilizer = M3Patchilizer(config.patch_size, config.patch_length)
    train_arrays = encode_pieces(train_pieces, patchilizer)
    eval_arrays = [a[:config.patch_length] for a in encode_pieces(eval_set, patchilizer)]

    torch.manual_seed(seed)
    rng = random.Random(seed)
    start_step, best_eval = 0, math.inf
    model = M3Model(config, with_decoder=True)
    state_path = out / "training_state.pt"
    if resume:
        last = out / "last" if (out / "last").exists() else out / ".last.old"
        if not state_path.is_file() or not last.exists():
            raise CheckpointError(f"{out}: nothing to resume (needs last/ and training_state.pt)")
        loaded = load_native(last, with_decoder=True)
        if loaded.model.config != config:
            raise ConfigError(f"{out}: the saved encoder's config differs from preset {preset!r}")
        model = loaded.model
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    if resume:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_step, best_eval = int(state["step"]), float(state["best_eval"])
        rng = _rng_from_tensor(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])

    # A fixed corruption of the held-out windows: the same masks at every validation.
    eval_batches = [corrupt(eval_arrays[i:i + batch_size], random.Random(seed + 1 + i))
                    for i in range(0, len(eval_arrays), batch_size)]

    def evaluate() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in eval_batches:
                n = int(batch.selected.sum())
                loss = model.masked_patch_loss(batch.inputs.to(device), batch.masks.to(device),
                                               batch.targets.to(device), batch.selected.to(device))
                total, count = total + float(loss) * n, count + n
        model.train()
        return total / max(count, 1)

    provenance = {"preset": preset, "data": str(data), "train_pieces": len(train_pieces),
                  "eval_pieces": len(eval_set), "batch_size": batch_size, "lr": lr, "warmup": warmup,
                  "max_decoded": max_decoded, "seed": seed, "mask_ratio": MASK_RATIO}
    encoder_name = name or f"notagen-m3-{preset}"

    def checkpoint(step: int, eval_loss: float, is_best: bool) -> None:
        info = {**provenance, "step": step, "eval_loss": eval_loss}
        for kept, wanted in (("last", True), ("best", is_best)):
            if wanted:
                with atomic_directory(out / kept) as folder:
                    save_encoder(model, folder, encoder_name, info)
        with atomic_path(state_path) as tmp:
            torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step,
                        "best_eval": best_eval, "python_rng": _rng_tensor(rng), "torch_rng": torch.get_rng_state()},
                       tmp)

    out.mkdir(parents=True, exist_ok=True)
    if resume:  # lines logged after the saved step would come twice
        trim_metrics(out / METRICS_FILE, start_step)
    metrics = (out / METRICS_FILE).open("a" if resume else "w", encoding="utf-8")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start_step, desc="encoder", unit="step", dynamic_ncols=True)
    model.train()
    started = time.perf_counter()
    try:
        for step in range(start_step + 1, steps + 1):
            picks = [rng.randrange(len(train_arrays)) for _ in range(batch_size)]
            windows = [crop_window(train_arrays[i], config.patch_length, rng) for i in picks]
            batch = corrupt(windows, rng, max_decoded=max_decoded)
            loss = model.masked_patch_loss(batch.inputs.to(device), batch.masks.to(device),
                                           batch.targets.to(device), batch.selected.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
            record: dict[str, Any] = {"step": step, "loss": round(loss.item(), 5),
                                      "grad_norm": round(float(grad_norm), 4),
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "elapsed_s": round(time.perf_counter() - started, 2)}
            if step % eval_every == 0 or step == steps:
                eval_loss = evaluate()
                is_best = eval_loss < best_eval
                best_eval = min(best_eval, eval_loss)
                record["eval_loss"] = round(eval_loss, 5)
                checkpoint(step, eval_loss, is_best)
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{best_eval:.3f}")
    finally:
        metrics.close()
        if bar is not None:
            bar.close()
    print(f"encoder: {steps} steps, best eval loss {best_eval:.4f}; weights in {out / 'best'}")
    return 0
