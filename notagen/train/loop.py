"""`notagen train RECIPE.yaml key=value…`: pre-training and fine-tuning, on one process or many (torchrun).

Design, and why:

* **The data stream is a pure function of (seed, draw number).** Draw d reads piece `perm_e[d mod n]` of epoch
  e = d div n, and its key and crop come from a `random.Random` seeded by (seed, d). Nothing about the stream lives
  in mutable state, so resuming at step s re-creates exactly the next batch, and splitting the draws of a global
  micro-batch over W processes (rank r takes draws r, r+W, …) gives the same global batch for any W.
* **The loss is normalised by the global number of target characters** (all processes, all accumulation
  micro-batches), counted before the forward pass. The gradient of a step is therefore the gradient of the mean
  character loss of the whole global batch, whatever the world size or accumulation split (DDP averages gradients,
  so each process scales its sum by W / global count).
* **Dropout and character sampling are reseeded from (seed, step, rank) every step**, so a resumed run is exact
  without replaying anything.
* **Resume state is one file written atomically** (`train_state.pt`: weights, optimizer, scheduler, loss scaler,
  RNG states, step, draws, best eval). A `kill -9` at any moment leaves either the previous or the new state.
  `metrics.jsonl` lines past the saved step are dropped on resume so the curve continues without duplicates.
* The learning-rate schedule is attached to the optimizer that steps (the reference's warm-up was not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import sys
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from notagen import __version__
from notagen.checkpoint import LM_HEAD_KEY, native_state_dict, save_checkpoint
from notagen.config import ModelConfig
from notagen.data.dataset import ScoreDataset, draw_key
from notagen.errors import ConfigError, InputError
from notagen.io import append_jsonl, atomic_write_text, remove_stale_temporaries
from notagen.model import NotaGenModel, char_subset, target_char_counts
from notagen.patchilizer import Patchilizer
from notagen.prompt import Prompt
from notagen.train.core import (
    METRICS_FILE,
    STATE_FILE,
    GuardedStep,
    build_optimizer,
    collate,
    load_state,
    rng_state,
    save_state,
    seed_int,
    seeded,
    set_rng_state,
    setup_runtime,
    trainable,
    trim_metrics,
)
from notagen.train.recipe import TrainConfig, dump_recipe, keys_help, load_recipe, unknown_key_error
from notagen.weights import open_checkpoint

# Recipe fields that define the data stream and the step size; changing them makes a resumed run a different run.
STREAM_FIELDS = ("stage", "seed", "batch_size", "grad_accum", "key_policy", "char_batch_limit", "prompt_balance",
                 "prompt_weights")


# -- learning-rate schedule ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class LRSchedule:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, then the chosen curve.

    Step 0 runs at 1/warmup of the peak, step warmup-1 at the peak; cosine and linear then decay to
    `min_ratio` at `total_steps`.
    """

    warmup_steps: int
    total_steps: int
    schedule: str = "constant"
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.schedule == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.schedule == "linear":
            shape = 1.0 - progress
        else:
            raise ConfigError(f"unknown schedule {self.schedule!r}")
        return self.min_ratio + (1.0 - self.min_ratio) * shape


# -- data ----------------------------------------------------------------------------------------------------------


def prompt_weights(dataset: ScoreDataset, balance: float, boosts: dict[str, float] | None = None) -> list[float]:
    """Per-piece draw weights that give a prompt with c pieces a share ∝ c**balance × its boosts (unlabelled
    pieces count as one more prompt). A boost names a whole prompt (`period | composer | instrumentation`) or one
    field value that selects every prompt having it ("Chamber", "Bach, Johann Sebastian"); a prompt selected by
    several boosts gets their product. A name that selects nothing is a ConfigError: a misspelt name would
    otherwise leave the run it was meant to change unchanged."""
    prompts = [Prompt.of(r.get("labels")) for r in dataset.records]
    counts = Counter(prompts)
    labelled = [p for p in counts if p is not None]
    factors: dict[Prompt | None, float] = {}
    for text, boost in (boosts or {}).items():
        name = " ".join(text.split())
        selected = [p for p in labelled if name == str(p) or name in p.fields()]
        if not selected:
            known = sorted({str(p) for p in labelled} | {f for p in labelled for f in p.fields()})
            raise unknown_key_error(text, known, "prompt_weights")
        for prompt in selected:
            factors[prompt] = factors.get(prompt, 1.0) * boost
    return [counts[p] ** (balance - 1.0) * factors.get(p, 1.0) for p in prompts]


class DrawStream(torch.utils.data.Dataset):
    """This process's share of micro-batch k of the global draw stream, ready to train on.

    Item k holds draws k·B + r, k·B + r + W, … (B = global micro-batch, r = rank, W = world size), each a
    training encoding of one piece, collated, plus the character-decoder sample when `char_batch_limit` is set.
    """

    def __init__(self, dataset: ScoreDataset, patchilizer: Patchilizer, key_stage: str, prompt: bool,
                 batch_size: int, seed: int, rank: int = 0, world: int = 1, char_batch_limit: int = 0,
                 balance: float = 1.0, boosts: dict[str, float] | None = None) -> None:
        self.dataset = dataset
        self.patchilizer = patchilizer
        self.key_stage = key_stage
        self.prompt = prompt
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.char_batch_limit = char_batch_limit
        self.weights = prompt_weights(dataset, balance, boosts) if balance != 1.0 or boosts else None
        self._perm: tuple[int, list[int]] | None = None

    def __len__(self) -> int:  # the stream is endless; DataLoader only needs indices from the sampler
        return sys.maxsize

    def piece_of(self, draw: int) -> int:
        epoch, position = divmod(draw, len(self.dataset))
        if self._perm is None or self._perm[0] != epoch:
            order = list(range(len(self.dataset)))
            if self.weights is None:  # every piece once per epoch
                seeded(self.seed, "epoch", epoch).shuffle(order)
            else:  # as many draws, each piece with its prompt's share
                order = seeded(self.seed, "epoch", epoch).choices(order, weights=self.weights, k=len(order))
            self._perm = (epoch, order)
        return self._perm[1][position]

    def encode(self, draw: int) -> list[list[int]]:
        index = self.piece_of(draw)
        rng = seeded(self.seed, "draw", draw)
        key = draw_key(self.dataset.records[index], self.key_stage, rng)
        text = self.dataset.text(index, key=key, prompt=self.prompt)
        return self.patchilizer.encode_train(text, rng)

    def __getitem__(self, micro: int) -> dict[str, Any]:
        first = micro * self.batch_size
        draws = range(first + self.rank, first + self.batch_size, self.world)
        patches, masks = collate([self.encode(d) for d in draws], self.patchilizer.patch_size)
        counts = target_char_counts(patches, masks)
        pick = None
        if self.char_batch_limit:
            generator = torch.Generator().manual_seed(seed_int(self.seed, "pick", micro, self.rank))
            pick = char_subset(counts.numel(), self.char_batch_limit, generator)
        if pick is not None:
            counts = counts[pick]
        return {"patches": patches, "masks": masks, "pick": pick, "chars": int(counts.sum()),
                "draws": list(draws)}


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    """DataLoader collate for items that are already batches (a module-level function pickles to workers)."""
    return item


def prompt_registry(dataset: ScoreDataset) -> list[dict[str, Any]]:
    """The (period, composer, instrumentation) combinations of the labelled pieces, most frequent first."""
    counts = Counter(prompt for r in dataset.records if (prompt := Prompt.of(r.get("labels"))) is not None)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{**prompt.to_dict(), "count": n} for prompt, n in ordered]


def resolve_precision(choice: str, device: torch.device) -> str:
    if device.type != "cuda":
        if choice == "fp16":
            raise ConfigError("precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        return "fp32" if choice == "auto" else choice
    if choice == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return choice


# -- the trainer ---------------------------------------------------------------------------------------------------


class Trainer:
    """One training run: `Trainer(config).train()`. Resumes from `output_dir/train_state.pt` when present."""

    def __init__(self, config: TrainConfig) -> None:
        config.check_runnable()
        self.config = config
        self.rt = setup_runtime(config.device, batch_size=config.batch_size)
        self.run_dir = Path(config.output_dir)
        self.precision = resolve_precision(config.precision, self.rt.device)
        state = self._read_state()

        stage_prompt = config.stage == "finetune"
        self.train_set = ScoreDataset(config.dataset, split="train", labelled_only=stage_prompt)
        if len(self.train_set) == 0:
            what = "labelled train pieces (finetune needs labels)" if stage_prompt else "train pieces"
            raise InputError(f"dataset {config.dataset} has no {what}")
        self.eval_set = ScoreDataset(config.dataset, split="eval", labelled_only=stage_prompt)
        if stage_prompt and config.min_prompt_pieces > 1:
            kept = {Prompt.of(e) for e in prompt_registry(self.train_set) if e["count"] >= config.min_prompt_pieces}
            if not kept:
                raise InputError(f"no prompt has {config.min_prompt_pieces} labelled train pieces in "
                                 f"{config.dataset}; lower min_prompt_pieces")
            for split_set in (self.train_set, self.eval_set):
                split_set.records = [r for r in split_set.records if Prompt.of(r.get("labels")) in kept]
        self.prompts = prompt_registry(self.train_set) if stage_prompt else None

        self.model = self._build_model(state)
        self.patchilizer = Patchilizer(patch_size=self.model.config.patch_size,
                                       patch_length=self.model.config.patch_length)
        self.global_batch = config.batch_size * config.grad_accum
        steps_per_epoch = math.ceil(len(self.train_set) / self.global_batch)
        self.total_steps = config.max_steps or config.epochs * steps_per_epoch
        self.stream = DrawStream(self.train_set, self.patchilizer, config.key_stage, stage_prompt,
                                 config.batch_size, config.seed, self.rt.rank, self.rt.world,
                                 config.char_batch_limit,
                                 balance=config.prompt_balance if stage_prompt else 1.0,
                                 boosts=config.prompt_weights if stage_prompt else None)

        self.loss_module = self.rt.wrap(self.model)  # the model's own loss; under DDP when several processes train
        self.optimizer = build_optimizer(self.model, config.lr, config.weight_decay, config.betas, config.eps,
                                         lean=config.optimizer == "adamw_lean")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LRSchedule(config.warmup_steps, self.total_steps, config.schedule, config.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.update = GuardedStep(self.optimizer, trainable(self.model), config.grad_clip, self.scaler,
                                  advice="lower lr or use precision=fp32")

        self.step = 0
        self.best_eval: float | None = None
        self.best_step: int | None = None
        self.last_eval: float | None = None
        if state is not None:
            self._load_state(state)
        if self.rt.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir)  # what a kill during a save left behind
            atomic_write_text(self.run_dir / "recipe.yaml", dump_recipe(config))
            trim_metrics(self.run_dir / METRICS_FILE, self.step)
        self._tensorboard = self._open_tensorboard()

    # -- setup ---------------------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any] | None:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return None
        if not self.config.resume:
            raise ConfigError(f"{self.run_dir} already holds a run ({STATE_FILE}); pass resume=true to continue "
                              "it or choose another output_dir")
        state = load_state(path)
        saved = state.get("recipe", {})
        changed = [name for name in STREAM_FIELDS if name in saved and saved[name] != getattr(self.config, name)]
        if changed:
            raise ConfigError(f"cannot resume {self.run_dir}: {', '.join(changed)} changed since the run started "
                              "(they define the data stream); use a new output_dir")
        return state

    def _model_config(self, base: ModelConfig) -> ModelConfig:
        """The checkpoint's architecture with the recipe's dropout; other architecture overrides must agree."""
        overrides = dict(self.config.model.overrides)
        dropout = overrides.pop("dropout", base.dropout)
        conflicts = [f"model.{k}={v} (checkpoint: {getattr(base, k)})" for k, v in overrides.items()
                     if getattr(base, k) != v]
        if conflicts:
            raise ConfigError(f"init_checkpoint {self.config.init_checkpoint} fixes the architecture; "
                              f"drop {', '.join(conflicts)}")
        return dataclasses.replace(base, dropout=dropout)

    def _build_model(self, state: dict[str, Any] | None) -> NotaGenModel:
        config = self.config
        if config.init_checkpoint:
            checkpoint = open_checkpoint(config.init_checkpoint)
            model_config = self._model_config(checkpoint.config)
            initial = native_state_dict(checkpoint.model)
        else:
            model_config = config.model.build()
            initial = None
        if state is not None:
            model_config = ModelConfig.from_dict(state["model_config"])
        torch.manual_seed(config.seed)  # the same initial weights on every process and every run
        model = NotaGenModel(model_config)
        weights = state["model"] if state is not None else initial
        if weights is not None:
            # lm_head is tied to the char embedding and may be stored once; nothing else may be missing.
            result = model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
            missing = [k for k in result.missing_keys if k != LM_HEAD_KEY]
            if missing or result.unexpected_keys:
                raise InputError(f"weights do not fit the model: missing {missing[:3]}, "
                                 f"unexpected {result.unexpected_keys[:3]}")
        model.patch_level_decoder.base.wte.weight.requires_grad_(False)  # unused (vocab-1 placeholder)
        model.set_gradient_checkpointing(config.activation_checkpointing)
        return model.to(self.rt.device).train()

    def _open_tensorboard(self) -> Any:
        if not (self.config.tensorboard and self.rt.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)

    # -- state -----------------------------------------------------------------------------------------------------
    def _apply_recipe_hyperparameters(self, step: int) -> None:
        """After loading optimizer/scheduler state, make the recipe the source of truth again.

        Both state dicts carry the hyper-parameters of the run that saved them (LambdaLR even restores its
        schedule object's fields), so without this a resumed run would silently ignore a raised max_steps or a
        changed lr. With an unchanged recipe the values are recomputed bit for bit as LambdaLR computes them.
        """
        config = self.config
        schedule = LRSchedule(config.warmup_steps, self.total_steps, config.schedule, config.min_lr_ratio)
        groups = self.optimizer.param_groups
        self.scheduler.lr_lambdas = [schedule for _ in groups]
        self.scheduler.base_lrs = [config.lr for _ in groups]
        for index, group in enumerate(groups):
            group["initial_lr"] = config.lr
            group["lr"] = config.lr * schedule(step)
            group["betas"], group["eps"] = config.betas, config.eps
            group["weight_decay"] = config.weight_decay if index == 0 else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "draws": self.step * self.global_batch,
            "best_eval": self.best_eval,
            "best_step": self.best_step,
            "last_eval": self.last_eval,
            "model_config": self.model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "recipe": self.config.to_dict(),
            "world_size": self.rt.world,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_recipe_hyperparameters(int(state["step"]))
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_eval, self.best_step = state["best_eval"], state["best_step"]
        self.last_eval = state.get("last_eval")
        set_rng_state(state["rng"])

    def save_state(self) -> None:
        """Write train_state.pt atomically (rank 0) and the `last` checkpoint."""
        if not self.rt.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.save_model("last")  # before the state: a kill in between resumes from the older state, harmlessly
        save_state(self.run_dir / STATE_FILE, self.state_dict())

    def save_model(self, name: str) -> Path:
        training = {
            "stage": self.config.stage,
            "step": self.step,
            "epoch": round(self.step * self.global_batch / len(self.train_set), 4),
            "eval_loss": self.last_eval,
            "best_eval_loss": self.best_eval,
            "dataset": str(self.config.dataset),
            "init_checkpoint": self.config.init_checkpoint,
            "recipe": self.config.to_dict(),
            "notagen_version": __version__,
        }
        return save_checkpoint(self.run_dir / "checkpoints" / name, self.model, prompts=self.prompts,
                               training=training)

    def log(self, record: dict[str, Any]) -> None:
        if not self.rt.main:
            return
        append_jsonl(self.run_dir / METRICS_FILE, record)
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, record["step"])

    # -- steps -----------------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.rt.device.type, dtype=dtype)

    def _all_sum(self, value: float | Tensor) -> Tensor:
        tensor = torch.as_tensor(value, dtype=torch.float64, device=self.rt.device).clone()
        if self.rt.distributed:
            dist.all_reduce(tensor)
        return tensor

    def _batches(self) -> Iterator[dict[str, Any]]:
        sampler = itertools.count(self.step * self.config.grad_accum)
        loader = torch.utils.data.DataLoader(
            self.stream, batch_size=None, sampler=sampler, num_workers=self.config.num_workers,
            pin_memory=self.rt.device.type == "cuda", collate_fn=_as_is,
        )
        return iter(loader)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches; returns loss, lr, grad norm, characters."""
        config, rt = self.config, self.rt
        self.model.train()
        torch.manual_seed(seed_int(config.seed, "step", self.step, rt.rank))  # dropout of this step
        total_chars = float(self._all_sum(sum(b["chars"] for b in micro_batches)).item())
        scale = rt.world / max(total_chars, 1.0)  # DDP averages over processes; undo it to get a global mean
        lr = self.optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
        for index, batch in enumerate(micro_batches):
            patches = batch["patches"].to(rt.device, non_blocking=True)
            masks = batch["masks"].to(rt.device, non_blocking=True)
            pick = batch["pick"].to(rt.device) if batch["pick"] is not None else None
            sync = index == len(micro_batches) - 1
            no_sync = (self.loss_module.no_sync() if rt.distributed and not sync else contextlib.nullcontext())
            with no_sync:
                with self._autocast():
                    nll = self.loss_module(patches, masks, pick, reduction="sum")
                self.scaler.scale(nll * scale).backward()
            loss_sum += nll.detach().double()
        grad_norm = self.update(self.step)
        with warnings.catch_warnings():  # after a skipped update torch warns that the optimizer did not step
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.step += 1
        loss = float(self._all_sum(loss_sum).item()) / max(total_chars, 1.0)
        return {"loss": loss, "lr": lr, "grad_norm": float(grad_norm), "chars": total_chars}

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean character loss over the eval pieces (original key, crops fixed by the seed); None if none."""
        n = len(self.eval_set)
        if self.config.eval_batches:
            n = min(n, self.config.eval_batches * self.config.batch_size)
        if n == 0:
            return None
        rt = self.rt
        self.model.eval()
        local = list(range(rt.rank, n, rt.world))
        per_batch = max(1, self.config.batch_size // rt.world)
        nll = torch.zeros((), dtype=torch.float64, device=rt.device)
        chars = 0.0
        prompt = self.config.stage == "finetune"
        for start in range(0, len(local), per_batch):
            sequences = []
            for index in local[start:start + per_batch]:
                rng = seeded(self.config.seed, "eval", index)
                key = draw_key(self.eval_set.records[index], "original", rng)
                text = self.eval_set.text(index, key=key, prompt=prompt)
                sequences.append(self.patchilizer.encode_train(text, rng))
            patches, masks = collate(sequences, self.patchilizer.patch_size)
            chars += float(target_char_counts(patches, masks).sum())
            with self._autocast():
                nll += self.model(patches.to(rt.device), masks.to(rt.device), reduction="sum").double()
        self.model.train()
        total_chars = float(self._all_sum(chars).item())
        return float(self._all_sum(nll).item()) / max(total_chars, 1.0)

    def _eval_and_keep_best(self) -> None:
        loss = self.evaluate()
        if loss is None:
            return
        self.last_eval = loss
        self.log({"step": self.step, "eval_loss": loss})
        if self.best_eval is None or loss < self.best_eval:
            self.best_eval, self.best_step = loss, self.step
            if self.rt.main:
                self.save_model("best")

    # -- the loop --------------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Run to `total_steps` (or stop after step `until`, without a final save: a simulated kill)."""
        from tqdm.auto import tqdm

        config = self.config
        stop = self.total_steps if until is None else min(until, self.total_steps)
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.rt.main and config.progress), desc=f"{config.stage}")
        batches = self._batches()
        window: list[dict[str, float]] = []
        window_start = time.perf_counter()
        try:
            while self.step < stop:
                micro = [next(batches) for _ in range(config.grad_accum)]
                window.append(self.train_step(micro))
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    chars = sum(w["chars"] for w in window)
                    record = {
                        "step": self.step,
                        "epoch": round(self.step * self.global_batch / len(self.train_set), 4),
                        "loss": sum(w["loss"] * w["chars"] for w in window) / max(chars, 1.0),
                        "lr": window[-1]["lr"],
                        "grad_norm": window[-1]["grad_norm"],
                        "chars_per_s": chars / max(elapsed, 1e-9),
                    }
                    self.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", chars_s=f"{record['chars_per_s']:.0f}")
                    window, window_start = [], time.perf_counter()
                at_end = self.step == self.total_steps
                if (config.eval_every and self.step % config.eval_every == 0) or at_end:
                    self._eval_and_keep_best()
                if self.step % config.save_every == 0 or at_end:
                    self.save_state()
        finally:
            bar.close()
            if self._tensorboard is not None:
                self._tensorboard.flush()
        return {"step": self.step, "best_eval": self.best_eval, "best_step": self.best_step,
                "last_eval": self.last_eval}

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        self.rt.close()


def train_command(recipe: Path, overrides: list[str]) -> int:
    """Train (pretrain or finetune) a NotaGen model from a YAML recipe.

    Resumes automatically when the recipe's output_dir already holds a run. Under torchrun every process trains
    its share of each global batch; only rank 0 writes. Writes output_dir/checkpoints/{last,best}/ (model +
    config.json with the prompt registry), metrics.jsonl, recipe.yaml and train_state.pt.

    Args:
        recipe: YAML recipe (see recipes/); every key is a TrainConfig field.
        overrides: key=value pairs applied after the recipe (dotted for the model: model.dropout=0.0).

    Examples:
        notagen train recipes/mini/pretrain.yaml dataset=datasets/music21
        notagen train recipes/mini/finetune.yaml dataset=datasets/music21 init_checkpoint=runs/mini/best
        torchrun --nproc_per_node=8 -m notagen.cli train recipes/mini/pretrain.yaml dataset=DATA
    """
    config = load_recipe(recipe, overrides)
    trainer = Trainer(config)
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    if trainer.rt.main:
        best = ""
        if summary["best_eval"] is not None:
            best = f", best eval {summary['best_eval']:.4f} at step {summary['best_step']}"
        print(f"trained {summary['step']} steps{best}; checkpoints in {trainer.run_dir / 'checkpoints'}")
    return 0


# `notagen train --help` lists every recipe key with its default and meaning (from the attribute docstrings).
train_command.__doc__ = (train_command.__doc__ or "").replace(
    "\n\n    Args:", "\n\n    Recipe keys:\n" + textwrap.indent(keys_help(), "    ") + "\n\n    Args:", 1)
