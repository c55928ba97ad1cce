"""Training recipes: a typed `TrainConfig`, read from YAML and patched with `key=value` overrides.

A recipe is one YAML mapping whose keys are the fields below; `model` is a nested mapping with a `preset` and any
`ModelConfig` field to override (`model.dropout=0.0` on the command line). Every value is checked against the
field's type, so `lr=1e-4`, `betas=0.9,0.95`, `activation_checkpointing=true` and `init_checkpoint=null` all work,
and a mistake (unknown key, wrong type, impossible combination) is one `ConfigError` line naming the key and where
it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from notagen.config import PRESETS, ModelConfig
from notagen.errors import ConfigError

Stage = Literal["pretrain", "finetune"]


@dataclass
class ModelSpec:
    """Which model to build: a named preset plus field overrides (ignored when starting from a checkpoint,
    except `dropout`, which a run may change)."""

    preset: str = "mini"
    """Name of a `notagen.config.PRESETS` entry (tiny, mini, small, medium, large, x)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`ModelConfig` fields that differ from the preset (`model.hidden_size=128`)."""

    def build(self) -> ModelConfig:
        return ModelConfig.preset(self.preset, **self.overrides)


@dataclass
class TrainConfig:
    """Everything one training run needs; `notagen train RECIPE.yaml key=value…` fills it."""

    stage: Stage = "pretrain"
    """`pretrain` (keys uniform over 15, no prompts) or `finetune` (labelled pieces with prompt lines, keys peaked
    around the original, starts from `init_checkpoint`)."""
    dataset: str = ""
    """Dataset folder written by `notagen data build`."""
    output_dir: str = "runs/notagen"
    """Run folder: checkpoints/, metrics.jsonl, recipe.yaml, train_state.pt."""
    model: ModelSpec = field(default_factory=ModelSpec)
    """Model preset and overrides (`model.preset=tiny`, `model.dropout=0.0`)."""
    init_checkpoint: str | None = None
    """Checkpoint to start from (a native directory or an official .pth); required for `finetune`."""
    key_policy: Literal["auto", "pretrain", "finetune", "original"] = "auto"
    """Key drawn per piece and draw: `auto` follows the stage; `original` trains without key augmentation."""

    lr: float = 1e-4
    """Peak learning rate (reference: 1e-4 pretrain, 1e-5 finetune)."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate curve after warm-up."""
    warmup_steps: int = 1000
    """Optimizer steps of linear warm-up from lr/warmup_steps to lr."""
    min_lr_ratio: float = 0.0
    """Final lr / peak lr for the cosine and linear schedules."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay, applied to matrices and embedding tables (not to biases or LayerNorms)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    optimizer: Literal["adamw", "adamw_lean"] = "adamw"
    """`adamw` (fused on CUDA, foreach on CPU) or `adamw_lean`: per-parameter updates without the foreach
    temporaries, for the tightest memory budgets."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""

    batch_size: int = 4
    """Pieces per micro-batch over all processes (each of W processes takes batch_size / W of them)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the global batch is batch_size × grad_accum pieces."""
    min_prompt_pieces: int = 1
    """Fine-tuning only: keep prompts with at least this many labelled train pieces. Rarer prompts are left out
    of fine-tuning and of the prompt registry (a prompt learnt from one or two pieces can only copy them)."""
    prompt_balance: float = 1.0
    """Fine-tuning only: draw a prompt's pieces in proportion to count**prompt_balance / count, so 1.0 keeps the
    natural frequencies, 0.5 draws each prompt in proportion to the square root of its count (rare prompts
    oversampled) and 0.0 draws every prompt equally often."""
    prompt_weights: dict[str, float] = field(default_factory=dict)
    """Fine-tuning only: multiply the draw share of some prompts after `prompt_balance`, to train styles harder
    without dropping the others. A key is a whole prompt (`period | composer | instrumentation`, as in the
    registry) or one field value selecting every prompt that has it: `{"Bach, Johann Sebastian": 6, "Chamber": 4}`;
    on the command line `prompt_weights={"Chamber": 4}`."""
    max_steps: int = 0
    """Optimizer steps to run; 0 means `epochs` passes over the training pieces."""
    epochs: int = 0
    """Passes over the training pieces, used when max_steps is 0."""
    char_batch_limit: int = 0
    """If > 0, train the character decoder on at most this many random target patches per micro-batch and
    process (the reference's PATCH_SAMPLING_BATCH_SIZE); bounds memory on long pieces."""

    eval_every: int = 500
    """Optimizer steps between evaluations on the eval split (0: only at the end)."""
    eval_batches: int = 0
    """Evaluate on the first eval_batches × batch_size eval pieces; 0 uses every eval piece."""
    save_every: int = 500
    """Optimizer steps between resumable saves (the last checkpoint and train_state.pt)."""
    log_every: int = 10
    """Optimizer steps per line of metrics.jsonl (loss averaged over them)."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """`auto`: bf16 autocast on CUDA when supported (else fp16 with loss scaling), fp32 on CPU."""
    activation_checkpointing: bool = False
    """Recompute block activations in the backward pass (less memory, ~30 % more compute)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; `auto` picks CUDA when available (one GPU per process under torchrun)."""
    seed: int = 0
    """Seed of every random choice: data order, keys, crops, dropout, char sampling."""
    num_workers: int = 0
    """Data-loading worker processes per training process (0: load in the main process)."""
    resume: bool = True
    """Continue the run in output_dir if it holds a train_state.pt; false refuses to touch an existing run."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    tensorboard: bool = True
    """Also write TensorBoard events to output_dir/tensorboard when the tensorboard package is installed."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work together."""
        positive = ("lr", "batch_size", "grad_accum", "log_every", "save_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_prompt_pieces < 1:
            raise ConfigError(f"min_prompt_pieces must be at least 1, got {self.min_prompt_pieces}")
        non_negative = ("warmup_steps", "max_steps", "epochs", "char_batch_limit", "eval_every", "eval_batches",
                        "weight_decay", "grad_clip", "num_workers", "min_lr_ratio", "eps")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.prompt_balance <= 1:
            raise ConfigError(f"prompt_balance must be in [0, 1], got {self.prompt_balance}")
        for prompt, weight in self.prompt_weights.items():
            if weight <= 0:
                raise ConfigError(f"prompt_weights: {prompt!r} must have a positive weight, got {weight}")
        if self.min_lr_ratio > 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be in [0, 1), got {list(self.betas)}")
        if self.model.preset not in PRESETS:
            raise ConfigError(f"unknown model.preset {self.model.preset!r}; choose one of {', '.join(PRESETS)}")

    def check_runnable(self) -> None:
        """Checks that only matter when a run starts (a recipe may leave `dataset` to the command line)."""
        if not self.dataset:
            raise ConfigError("no dataset: set `dataset: PATH` in the recipe or pass dataset=PATH")
        if self.max_steps == 0 and self.epochs == 0:
            raise ConfigError("set max_steps or epochs to a positive number")
        if self.stage == "finetune" and not self.init_checkpoint:
            raise ConfigError("stage finetune starts from a checkpoint: set init_checkpoint=PATH")

    @property
    def key_stage(self) -> str:
        """The `draw_key` stage used for training draws."""
        return self.stage if self.key_policy == "auto" else self.key_policy

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = {"preset": self.model.preset, **self.model.overrides}
        data["betas"] = list(self.betas)
        return data


# -- parsing -------------------------------------------------------------------------------------------------------

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value or an override string to `annotation`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is Literal:
        text = str(value).strip() if value is not None else ""
        if text not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return text
    if origin is tuple:
        items = value
        if isinstance(value, str):
            items = [part for part in value.strip().strip("[]()").split(",") if part.strip()]
        if not isinstance(items, (list, tuple)) or len(items) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} comma-separated values, got {value!r}")
        return tuple(coerce(item, arg, where) for item, arg in zip(items, args))
    if origin is dict:
        if isinstance(value, str):  # an override: a YAML flow mapping such as {"a | b | c": 2}
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise ConfigError(f"{where}: expected a mapping such as {{\"key\": 2}}, got {value!r}") from None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = args
        return {coerce(k, key_type, where): coerce(v, value_type, where) for k, v in value.items()}
    if origin is list:
        items = value
        if isinstance(value, str):  # an override: comma-separated
            items = [part.strip() for part in value.strip().strip("[]").split(",") if part.strip()]
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(item, args[0], where) for item in items]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(str(value).strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if annotation is int:
            if not number.is_integer():
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if annotation is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"no coercion for {annotation!r}")


def unknown_key_error(key: str, known: typing.Iterable[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def _set(values: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Coerce `value` to the type of the field at `dotted` and store it in `values` (model keys nested)."""
    parts = dotted.split(".")
    if parts[0] not in _TRAIN_FIELDS:
        raise unknown_key_error(parts[0], _TRAIN_FIELDS, where)
    if parts[0] == "model":
        if len(parts) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: model must be a mapping with a preset, got {value!r}")
            for name, item in value.items():
                _set(values, f"model.{name}", item, where)
            return
        if len(parts) != 2:
            raise ConfigError(f"{where}: model keys are model.preset or model.<field>, got {dotted!r}")
        name = parts[1]
        spec = values.setdefault("model", {})
        if name == "preset":
            spec["preset"] = coerce(value, str, f"{where}: model.preset")
        elif name in _MODEL_FIELDS:
            spec[name] = coerce(value, _hints(ModelConfig)[name], f"{where}: model.{name}")
        else:
            raise unknown_key_error(name, ["preset", *_MODEL_FIELDS], f"{where}: model")
        return
    if len(parts) != 1:
        raise ConfigError(f"{where}: {parts[0]!r} has no sub-keys")
    values[parts[0]] = coerce(value, _hints(TrainConfig)[parts[0]], f"{where}: {parts[0]}")


def _construct(values: dict[str, Any]) -> TrainConfig:
    spec = values.pop("model", {})
    model = ModelSpec(preset=spec.pop("preset", ModelSpec.preset), overrides=spec)
    config = TrainConfig(model=model, **values)
    config.model.build()  # architecture overrides are checked now, not at the first step
    return config


def build_config(raw: dict[str, Any], where: str = "recipe") -> TrainConfig:
    """A TrainConfig from a plain mapping such as `TrainConfig.to_dict()` or a loaded YAML recipe."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        _set(values, str(key), value, where)
    return _construct(values)


def parse_override(text: str) -> tuple[str, str]:
    """`key=value` → (key, value); the value stays a string until coerced to the field's type."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value")
    return key.strip(), value.strip()


def recipe_items(path: str | Path | None, overrides: typing.Sequence[str] = ()
                 ) -> typing.Iterator[tuple[str, Any, str]]:
    """(key, raw value, where) for every key of a YAML recipe (None: none), then every `key=value` override.

    Shared by the training and DPO recipe loaders; `where` names the file or override for one-line errors.
    """
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read recipe {path}: {error.strerror}") from error
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or "invalid YAML"
            raise ConfigError(f"recipe {path}{line}: {problem}") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {path}: expected a mapping of keys to values")
        for key, value in loaded.items():
            yield str(key), value, f"recipe {path}"
    for text in overrides:
        key, value = parse_override(text)
        yield key, value, f"override {text!r}"


def load_recipe(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe (None: defaults only) and apply `key=value` overrides, in order."""
    values: dict[str, Any] = {}
    for key, value, where in recipe_items(path, overrides):
        _set(values, key, value, where)
    return _construct(values)


def dump_recipe(config: TrainConfig) -> str:
    """The config as YAML that `load_recipe` reads back to an equal config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def field_docs(cls: type = TrainConfig) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), read from the source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def keys_help() -> str:
    """One line per recipe key: name, default and what it does (for `notagen train --help`)."""
    defaults = TrainConfig().to_dict()
    lines = []
    for name, doc in field_docs().items():
        default = defaults.get(name)
        if name == "model":
            default = "preset: mini"
        first = doc.split(". ")[0].rstrip(".")
        lines.append(f"  {name} ({default}): {first}")
    return "\n".join(lines)
