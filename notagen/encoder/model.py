"""M3-style music encoder in plain PyTorch.

`M3Encoder`: a one-hot patch (patch_size × 128) → Linear → learned positions + token-type-0 embedding → LayerNorm →
post-LN BERT blocks (exact GELU, SDPA attention). The one-hot Linear is computed as a sum of gathered weight
columns (`embedding_bag`), which is the same arithmetic without materialising the 8,192-wide one-hot tensor.
`M3TokenDecoder`: the GPT-2-style character decoder used only for masked-patch pre-training (its blocks are
`notagen.model.Block`, the one GPT-2 block of the package); the encoder's state for a patch replaces the embedding of
that patch's first (bos) character and the decoder predicts the rest.
`music_proj` (CLaMP 2's projection) is present when `config.projection` is true.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from notagen.config import ModelConfig
from notagen.encoder.patchilizer import PAD_ID, VOCAB_SIZE
from notagen.errors import ConfigError
from notagen.model import Block, init_weights


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of an M3-style encoder (+ its pre-training decoder)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 64
    patch_length: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    decoder_layers: int = 3
    decoder_heads: int = 12
    decoder_eps: float = 1e-5
    projection: bool = False  # CLaMP 2 / 3 music projection (Linear H → H) after pooling

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EncoderConfig:
        if name not in _PRESETS:
            raise ConfigError(f"unknown encoder preset {name!r}; choose one of {', '.join(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown encoder config fields: {', '.join(unknown)}")
        return cls(**data)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.hidden_size % self.decoder_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by the number of heads")


_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512, patch_length=128,
                 decoder_layers=1, decoder_heads=2),
    "small": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, patch_length=256,
                  decoder_layers=2, decoder_heads=4),
    "official": dict(),
}


def _attention(x: Tensor, qkv: nn.Linear, heads: int, attn_mask: Tensor | None, causal: bool,
               dropout: float) -> Tensor:
    B, T, H = x.shape
    q, k, v = qkv(x).view(B, T, 3, heads, H // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=causal)
    return out.transpose(1, 2).reshape(B, T, H)


class BertBlock(nn.Module):
    """Post-LN transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        H = config.hidden_size
        self.heads = config.num_heads
        self.qkv = nn.Linear(H, 3 * H)
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(H, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, H)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.p = config.dropout

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        a = _attention(x, self.qkv, self.heads, attn_mask, False, self.p if self.training else 0.0)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        h = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.dropout(h))


class M3Encoder(nn.Module):
    """Patch-level BERT: patches [B, N, patch_size] ids + masks [B, N] → hidden states [B, N, H]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.patch_embedding = nn.Linear(config.patch_size * VOCAB_SIZE, H)
        self.position_embedding = nn.Embedding(config.patch_length, H)
        self.token_type_embedding = nn.Embedding(config.type_vocab_size, H)
        self.embed_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(BertBlock(config) for _ in range(config.num_layers))
        self.register_buffer("_offsets", torch.arange(config.patch_size) * VOCAB_SIZE, persistent=False)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """Linear(one_hot(patches)) without the one-hot: sum of the weight columns the ids select, + bias."""
        B, N, P = patches.shape
        if P != self.config.patch_size:
            raise ValueError(f"patches have {P} characters, the encoder expects {self.config.patch_size}")
        index = (patches.long() + self._offsets).reshape(B * N, P)
        out = F.embedding_bag(index, self.patch_embedding.weight.t(), mode="sum")
        return (out + self.patch_embedding.bias).view(B, N, -1)

    def forward(self, patches: Tensor, masks: Tensor | None = None) -> Tensor:
        B, N, _ = patches.shape
        if N > self.config.patch_length:
            raise ValueError(f"{N} patches exceed the encoder's {self.config.patch_length} positions")
        x = self.embed_patches(patches)
        x = x + self.position_embedding.weight[:N] + self.token_type_embedding.weight[0]
        x = self.embed_dropout(self.embed_norm(x))
        attn_mask = None
        if masks is not None and not bool(masks.bool().all()):
            attn_mask = masks.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x


class M3TokenDecoder(nn.Module):
    """Rebuilds a patch's characters from its encoder state (M3 pre-training)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        H = config.hidden_size
        self.wte = nn.Embedding(VOCAB_SIZE, H)
        self.wpe = nn.Embedding(config.patch_size, H)
        self.drop = nn.Dropout(config.dropout)
        block = ModelConfig(patch_size=config.patch_size, hidden_size=H, n_heads=config.decoder_heads,
                            dropout=config.dropout, layer_norm_eps=config.decoder_eps)
        self.blocks = nn.ModuleList(Block(block, i) for i in range(config.decoder_layers))
        self.ln_f = nn.LayerNorm(H, eps=config.decoder_eps)

    def logits(self, patch_states: Tensor, target_patches: Tensor) -> Tensor:
        """Logits [M, patch_size, 128]; position t predicts character t+1."""
        M, P = target_patches.shape
        x = self.wte(target_patches)
        x = torch.cat([patch_states.unsqueeze(1), x[:, 1:]], dim=1) + self.wpe.weight[:P]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()

    def forward(self, patch_states: Tensor, target_patches: Tensor) -> Tensor:
        """Mean cross-entropy over every real (non-pad) character after the first."""
        logits = self.logits(patch_states, target_patches)[:, :-1]
        labels = target_patches[:, 1:].masked_fill(target_patches[:, 1:] == PAD_ID, -100)
        return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), labels.reshape(-1), ignore_index=-100)


class M3Model(nn.Module):
    """Encoder, optional projection, optional pre-training decoder."""

    def __init__(self, config: EncoderConfig, with_decoder: bool = True) -> None:
        super().__init__()
        self.config = config
        self.encoder = M3Encoder(config)
        self.music_proj = nn.Linear(config.hidden_size, config.hidden_size) if config.projection else None
        self.decoder = M3TokenDecoder(config) if with_decoder else None
        self.apply(init_weights)

    def pooled(self, patches: Tensor, masks: Tensor, project: bool = True) -> Tensor:
        """Masked mean of the last hidden states, then the projection if present and asked for: [B, H]."""
        states = self.encoder(patches, masks)
        m = masks.to(states.dtype).unsqueeze(-1)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1)
        if project and self.music_proj is not None:
            pooled = self.music_proj(pooled)
        return pooled

    def masked_patch_loss(self, inputs: Tensor, masks: Tensor, targets: Tensor, selected: Tensor) -> Tensor:
        """M3's objective: encode corrupted `inputs`, decode the original `targets` at `selected` [B, N] bool."""
        if self.decoder is None:
            raise RuntimeError("this model was built without its token decoder")
        states = self.encoder(inputs, masks)
        return self.decoder(states[selected], targets[selected])

    def num_parameters(self, part: str = "all") -> int:
        module = {"all": self, "encoder": self.encoder, "decoder": self.decoder}[part]
        return 0 if module is None else sum(p.numel() for p in module.parameters())
