"""What every trainer shares: `notagen train` (train/loop.py) and `notagen dpo` (dpo/loop.py).

* Seeded streams (`seeded`, `seed_int`): every draw, crop and dropout mask is a pure function of (seed, parts), so a
  resumed run recomputes exactly what an uninterrupted one would.
* The process group (`setup_runtime`: torchrun's RANK / WORLD_SIZE / LOCAL_RANK, NCCL on CUDA, gloo on the CPU).
* The optimizer (`build_optimizer`: AdamW, weight decay on matrices only, fused on CUDA) and its guarded step
  (`GuardedStep`: clip, then skip an update whose gradients are not finite numbers, and give up after
  MAX_SKIPPED_STEPS of them).
* The run folder's files: the resume state (`save_state` / `load_state`, one file written atomically) and the
  metrics log (`METRICS_FILE`, lines past the saved step dropped on resume by `trim_metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from notagen.errors import ConfigError, InputError, NotaGenError
from notagen.io import atomic_path, atomic_write_text, read_jsonl

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
STATE_VERSION = 1
MAX_SKIPPED_STEPS = 10
"""Optimizer steps with non-finite gradients tolerated before a run is declared diverged."""


class TrainingDiverged(NotaGenError):
    """The loss or gradients stopped being finite numbers."""


def seeded(seed: int, *parts: object) -> random.Random:
    """A generator determined by `seed` and `parts` (str seeds hash with SHA-512: stable across processes)."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def seed_int(seed: int, *parts: object) -> int:
    return seeded(seed, *parts).getrandbits(63)


def collate(sequences: Sequence[list[list[int]]], patch_size: int) -> tuple[Tensor, Tensor]:
    """Right-pad patch sequences with zero patches: (patches [B, N, P] long, masks [B, N] long)."""
    longest = max(len(seq) for seq in sequences)
    patches = torch.zeros(len(sequences), longest, patch_size, dtype=torch.long)
    masks = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, seq in enumerate(sequences):
        patches[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        masks[row, :len(seq)] = 1
    return patches, masks


# -- process group -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` under DistributedDataParallel when several processes train, else itself."""
        if not self.distributed:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_runtime(device_choice: str, batch_size: int | None = None) -> Runtime:
    """Read the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group if needed.

    With `batch_size` (the global batch), check that it splits evenly over the processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size is not None and batch_size % world:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {world} processes")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device_choice == "auto" else device_choice == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        owns_group = True
    return Runtime(rank=rank, world=world, local_rank=local_rank, device=device, owns_group=owns_group)


# -- RNG state (saved for completeness; the training draws themselves are reseeded per step) -----------------------


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- optimizer -----------------------------------------------------------------------------------------------------


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8, lean: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: group 0 the matrices (decayed), group 1 biases and norms (not).

    `lean` steps one tensor at a time (no foreach buffers: less peak memory); otherwise CUDA parameters use the
    fused kernel.
    """
    params = trainable(model)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    options: dict[str, Any] = {"lr": lr, "betas": betas, "eps": eps}
    if lean:
        options["foreach"] = False
    elif params and params[0].device.type == "cuda":
        options["fused"] = True
    return torch.optim.AdamW(groups, **options)


class GuardedStep:
    """One optimizer update: unscale (fp16), clip, step, zero the gradients.

    A NaN/inf gradient would poison every weight through AdamW's moments, so such an update is dropped (with the
    fp16 loss scaler, the scaler drops it itself and lowers its scale); after MAX_SKIPPED_STEPS dropped updates the
    run is declared diverged. `skipped` is part of the resume state of a caller that wants it exact.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], grad_clip: float,
                 scaler: torch.amp.GradScaler | None = None, what: str = "gradient", advice: str = "lower lr") -> None:
        self.optimizer = optimizer
        self.params = params
        self.max_norm = grad_clip if grad_clip > 0 else float("inf")
        self.scaler = scaler
        self.what = what
        self.advice = advice
        self.skipped = 0

    def __call__(self, step: int, finite_loss: bool = True) -> Tensor:
        """Apply the gradients of optimizer step `step` (0-based); returns the gradient norm before clipping."""
        scaler = self.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        if scaler is not None and scaler.is_enabled():
            scaler.step(self.optimizer)  # skips the step itself when fp16 gradients overflowed
            scaler.update()
        elif finite_loss and torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            self.skipped += 1
            print(f"notagen: warning: non-finite {self.what} at step {step + 1}; update skipped", file=sys.stderr)
            if self.skipped >= MAX_SKIPPED_STEPS:
                raise TrainingDiverged(f"{self.skipped} optimizer steps had non-finite gradients; {self.advice}")
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm


# -- run folder files ----------------------------------------------------------------------------------------------


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resume state atomically (a kill at any moment leaves the previous state or this one)."""
    with atomic_path(path) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """A state written by `save_state`; InputError when it is unreadable or of another version."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise InputError(f"{path}: unreadable training state ({error})") from error
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise InputError(f"{path}: training state version {version!r} is not {STATE_VERSION}")
    return state


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics log ([] when there is none); lines cut short by a kill are skipped."""
    if not path.is_file():
        return []
    return [record for record in read_jsonl(path) if isinstance(record, dict)]


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the saved `step` (a killed run logs past its last save)."""
    if path.is_file():
        kept = [record for record in read_metrics(path) if record.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


__all__ = ["GuardedStep", "METRICS_FILE", "MAX_SKIPPED_STEPS", "Runtime", "STATE_FILE", "STATE_VERSION",
           "TrainingDiverged", "build_optimizer", "collate", "load_state", "read_metrics", "rng_state", "save_state",
           "seed_int", "seeded", "set_rng_state", "setup_runtime", "trainable", "trim_metrics"]
