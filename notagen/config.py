"""Model configuration: one dataclass and its named presets.

The official NotaGen sizes are kept exactly so their checkpoints load; `tiny` is for
tests and `mini` is the bundled default (trains on one GPU in about half an hour or a 2-core CPU in a few hours).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from notagen.errors import ConfigError

VOCAB_SIZE = 128  # byte-level ASCII classes; every ABC character must be < 128
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
HEAD_DIM = 64  # GPT-2's head size; the official configs use hidden // 64 heads


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the two-level NotaGen model."""

    patch_size: int = 16
    """Characters per patch."""
    patch_length: int = 1024
    """Patches in the patch-level context (learned positions)."""
    patch_layers: int = 20
    """Blocks in the patch-level decoder."""
    char_layers: int = 6
    """Blocks in the character-level decoder."""
    hidden_size: int = 1280
    """Width of both decoders."""
    n_heads: int | None = None
    """Attention heads; None means hidden_size // 64 as in the official models."""
    dropout: float = 0.1
    """Embedding, attention and residual dropout while training."""
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        heads = self.heads
        if self.hidden_size % heads != 0:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by {heads} heads")
        if min(self.patch_size, self.patch_length, self.patch_layers, self.char_layers, self.hidden_size) < 1:
            raise ConfigError(f"model sizes must be positive: {self}")

    @property
    def heads(self) -> int:
        return self.n_heads if self.n_heads is not None else max(1, self.hidden_size // HEAD_DIM)

    @property
    def char_positions(self) -> int:
        """Character-decoder positions: the patch vector plus one per character."""
        return self.patch_size + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def num_parameters(self) -> int:
        """Parameter count (tied lm_head counted once), without building the model."""
        h, p = self.hidden_size, self.patch_size
        block = 12 * h * h + 13 * h  # attn 4h² + 4h, mlp 8h² + 5h, two LayerNorms 4h
        patch = (p * VOCAB_SIZE) * h + h + h + self.patch_length * h + self.patch_layers * block + 2 * h
        char = VOCAB_SIZE * h + self.char_positions * h + self.char_layers * block + 2 * h
        return patch + char


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(patch_length=64, patch_layers=2, char_layers=1, hidden_size=64, dropout=0.0),
    "mini": ModelConfig(patch_length=512, patch_layers=6, char_layers=2, hidden_size=256),
    "small": ModelConfig(patch_length=2048, patch_layers=12, char_layers=3, hidden_size=768),
    "medium": ModelConfig(patch_length=2048, patch_layers=16, char_layers=3, hidden_size=1024),
    "large": ModelConfig(patch_length=1024, patch_layers=20, char_layers=6, hidden_size=1280),
    "x": ModelConfig(patch_length=1024, patch_layers=20, char_layers=6, hidden_size=1280),
}
