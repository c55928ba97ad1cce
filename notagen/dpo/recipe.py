"""CLaMP-DPO recipes: a typed `DPOConfig`, read from YAML and patched with `key=value` overrides.

Values are checked with the training recipes' `coerce` (same syntax: `lr=1e-6`, `max_bars=null`,
`policy_dropout=false`); `prompts` is `all` or a list of "period | composer | instrumentation" strings (on the
command line separated by `;`). Mistakes are one `ConfigError` line naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from notagen.errors import ConfigError, PromptError
from notagen.generation.sampling import SamplingSettings
from notagen.metrics.theory import REWARD_TERMS
from notagen.prompt import FIELDS, Prompt
from notagen.train.recipe import coerce, field_docs, recipe_items, unknown_key_error


@dataclass
class DPOConfig:
    """Everything one CLaMP-DPO run needs; `notagen dpo RECIPE.yaml key=value…` fills it."""

    init_checkpoint: str = ""
    """Fine-tuned checkpoint that samples first and is the first reference model."""
    reference: str = ""
    """Dataset folder (`notagen data build`) whose pieces give the per-prompt centroids and the plagiarism set."""
    reference_split: Literal["train", "eval", "all"] = "train"
    """Split of the reference dataset used for centroids, label probes and the plagiarism checks."""
    encoder: str | None = None
    """Encoder directory or official CLaMP 2 / M3 .pth that scores pieces (None: the shipped encoder)."""
    output_dir: str = "runs/dpo"
    """Run folder: iter_k/{samples, scores.json, preferences.json, train_state.pt, checkpoint, eval.json}."""
    prompts: list[str] = field(default_factory=lambda: ["all"])
    """`all` (every registry prompt with at least min_reference_pieces reference pieces) or a list of
    "period | composer | instrumentation" prompts."""
    min_reference_pieces: int = 11
    """With prompts=all, keep prompts with at least this many reference pieces (paper: more than 10)."""

    samples_per_prompt: int = 100
    """Pieces sampled per prompt and iteration (paper: ~100)."""
    iterations: int = 3
    """DPO iterations K (the released RL3 model: 3)."""
    steps_per_iteration: int = 10000
    """Optimizer steps per iteration (reference: 10,000)."""
    batch_size: int = 1
    """Pairs per optimizer step over all processes (reference: 1)."""
    portion: float = 0.1
    """Share of each prompt's ranking taken as chosen (top) and rejected (bottom)."""
    lr: float = 1e-6
    """AdamW learning rate (paper: 1e-6), constant."""
    weight_decay: float = 0.01
    """AdamW weight decay (torch's default, as the reference)."""
    beta: float = 0.1
    """DPO β."""
    lam: float = 10.0
    """DPOP λ: weight of the penalty on lowering the chosen piece's log-probability."""
    grad_clip: float = 1.0
    """Clip the global gradient norm; 0 disables clipping."""
    policy_dropout: bool = True
    """Train the policy with its dropout on (as the reference); the reference model always runs in eval()."""

    temperature: float = SamplingSettings.temperature
    """Sampling temperature."""
    top_k: int = SamplingSettings.top_k
    """Sampling top-k (0: all)."""
    top_p: float = SamplingSettings.top_p
    """Sampling top-p."""
    strict: bool = SamplingSettings.strict
    """Strict decoding while sampling (as `notagen generate`); false samples the raw distribution, as the
    reference does (a small model's raw samples are then mostly invalid, and the validity filter drops them)."""
    max_chars: int | None = 102400
    """Give up on a sample after this many characters (reference: 102,400)."""
    max_bars: int | None = None
    """Give up on a sample after this many bars."""
    max_seconds: float | None = 1200.0
    """Give up on a sample after this many seconds (reference: 20 minutes)."""
    sample_batch_size: int = 8
    """Pieces generated together."""
    encoder_batch_size: int = 8
    """Chunks embedded together by the encoder."""

    alignment_filter: bool = True
    """Chosen pieces must be valid with aligned bars."""
    grouping_filter: bool = True
    """Chosen pieces must keep the staves of one instrument together."""
    plagiarism_filter: bool = True
    """Chosen pieces may not copy a reference piece (cosine or memorisation index)."""
    plagiarism_cosine: float | None = 0.95
    """Encoder cosine to a single reference piece above which a piece counts as a copy (the paper's 0.95 is for
    CLaMP 2). null: calibrated, the 95th percentile of that cosine over the reference dataset's eval pieces (real
    music the model never saw); needs reference_split train and a dataset with an eval split."""
    memorisation_bars: int = 4
    """Bars in a row copied from one reference piece that count as a copy (0 disables the index)."""
    theory_weight: float = 0.0
    """Weight of the music-theory term in the reward: a sample's reward is its encoder similarity (the paper's)
    plus theory_weight × `notagen.metrics.theory.theory_reward` (0–1: tonic ending, beat chords, parallels,
    whole-bar rests, ranges, instrumentation). 0 keeps the paper's reward."""

    theory_terms: list[str] = field(default_factory=lambda: list(REWARD_TERMS))
    """Which terms of the theory reward count (any of tonic_ending, beat_triads, instrumentation_fit, parallels,
    whole_bar_rests, out_of_range_pieces): all by default; one term aims an iteration at one fault."""

    final_eval: bool = True
    """After the last iteration, sample and evaluate the final model too (iter_K: samples, scores, eval)."""
    save_every: int = 500
    """Optimizer steps between resumable saves of train_state.pt."""
    log_every: int = 10
    """Optimizer steps per line of the iteration's metrics.jsonl."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to sample, score and train (one GPU per process under torchrun)."""
    seed: int = 0
    """Seed of every random choice: samples, pairs, crops, dropout."""
    progress: bool = True
    """Show progress bars (rank 0 only)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = ("samples_per_prompt", "iterations", "batch_size", "lr", "sample_batch_size",
                    "encoder_batch_size", "save_every", "log_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("steps_per_iteration", "weight_decay", "beta", "lam", "grad_clip", "memorisation_bars",
                     "theory_weight",
                     "temperature", "top_k", "min_reference_pieces"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        unknown = [term for term in self.theory_terms if term not in REWARD_TERMS]
        if unknown or not self.theory_terms:
            raise ConfigError(f"theory_terms: {', '.join(unknown) or 'empty'}; choose from {', '.join(REWARD_TERMS)}")
        if not 0 < self.portion <= 0.5:
            raise ConfigError(f"portion must be in (0, 0.5], got {self.portion}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.prompts:
            raise ConfigError("prompts is empty: use `all` or list prompts as 'period | composer | instrumentation'")

    def check_runnable(self) -> None:
        if not self.init_checkpoint:
            raise ConfigError("no init_checkpoint: set it in the recipe or pass init_checkpoint=PATH")
        if not self.reference:
            raise ConfigError("no reference dataset: set `reference: PATH` or pass reference=PATH")

    @property
    def all_prompts(self) -> bool:
        return [p.strip().lower() for p in self.prompts] == ["all"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(DPOConfig)}


def _prompt_list(value: Any, where: str) -> list[str]:
    """`all`, or each prompt as `period | composer | instrumentation` (from a string, a `;`-separated string or a
    mapping)."""
    if isinstance(value, str):
        items: list[Any] = value.split(";")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{where}: expected `all` or a list of prompts, got {value!r}")
    prompts = []
    for item in items:
        if isinstance(item, dict):
            missing = [k for k in FIELDS if not item.get(k)]
            if missing:
                raise ConfigError(f"{where}: prompt {item!r} lacks {', '.join(missing)}")
            prompts.append(str(Prompt.of(item)))
        elif not isinstance(item, str):
            raise ConfigError(f"{where}: a prompt is a string or a mapping, got {item!r}")
        elif item.strip().lower() == "all":
            prompts.append("all")
        elif item.strip():
            try:
                prompts.append(str(Prompt.parse(item)))
            except PromptError as error:
                raise ConfigError(f"{where}: {error}") from None
    return prompts


def _set(values: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key not in _FIELDS:
        raise unknown_key_error(key, _FIELDS, where)
    if key == "prompts":
        values[key] = _prompt_list(value, f"{where}: prompts")
    else:
        values[key] = coerce(value, typing.get_type_hints(DPOConfig)[key], f"{where}: {key}")


def load_dpo_recipe(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> DPOConfig:
    """Read a YAML recipe (None: defaults only) and apply `key=value` overrides, in order."""
    values: dict[str, Any] = {}
    for key, value, where in recipe_items(path, overrides):
        _set(values, key, value, where)
    return DPOConfig(**values)


def dump_dpo_recipe(config: DPOConfig) -> str:
    """The config as YAML that `load_dpo_recipe` reads back to an equal config."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def keys_help() -> str:
    """One line per recipe key: name, default and what it does (for `notagen dpo --help`)."""
    defaults = DPOConfig().to_dict()
    lines = []
    for name, doc in field_docs(DPOConfig).items():
        lines.append(f"  {name} ({defaults.get(name)}): {doc.split('. ')[0].rstrip('.')}")
    return "\n".join(lines)


__all__ = ["DPOConfig", "dump_dpo_recipe", "keys_help", "load_dpo_recipe"]
