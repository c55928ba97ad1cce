"""The two-level NotaGen model in plain PyTorch.

* Patch-level decoder: a 16-character patch is one-hot encoded over 128 classes (16×128 = 2048 inputs), projected to
  the hidden size, and run through GPT-2-style pre-LayerNorm blocks with learned positions.
* Character-level decoder: for every target patch a GPT-2-style stack over 17 positions, where position 0 is the
  patch-level hidden state of the *preceding* patch and positions 1…16 are the patch's characters; it predicts the
  next character at every position. Its LM head is tied to its character embedding.

Module and parameter names mirror the official checkpoints (`patch_level_decoder.base.h.0.attn.c_attn…`,
`char_level_decoder.base.transformer…`, `char_level_decoder.base.lm_head`) so loading is a rename-free copy; the
only layout difference is that we use `nn.Linear` ([out, in]) where GPT-2 uses `Conv1D` ([in, out]), handled in
`notagen.checkpoint`.

The model never owns a cache: `PatchLevelDecoder.forward` and `CharLevelDecoder.hidden` accept an optional cache
object from the generation engine (`notagen.generation.cache.KVCache`) with an `update(layer, k, v) -> (k_all,
v_all)` method, as nanochat's engine passes its `kv_cache` to the model. Training, perplexity and the engine's
one-step decoding all run these same modules (also after `notagen.precision` swapped their Linear layers for
quantised ones).
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from notagen.config import BOS_ID, PAD_ID, VOCAB_SIZE, ModelConfig


class LayerCache(Protocol):
    """What the attention layers need from a key/value cache: append new keys/values, get all of them back."""

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


def init_weights(module: nn.Module) -> None:
    """GPT-2/BERT initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms (used with `Module.apply`)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def target_char_counts(patches: Tensor, masks: Tensor) -> Tensor:
    """Real target characters of every target patch, in the order `NotaGenModel.char_targets` returns them."""
    target_mask = masks.bool().clone()
    target_mask[:, 0] = False
    return (patches[target_mask] != PAD_ID).sum(dim=1)


def char_subset(targets: int, limit: int, generator: torch.Generator | None = None) -> Tensor | None:
    """`limit` of `targets` target patches drawn at random (the `pick` of `NotaGenModel.forward`); None when
    `limit` is 0 or they all fit."""
    if not 0 < limit < targets:
        return None
    return torch.randperm(targets, generator=generator)[:limit]


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.layer = layer
        self.n_heads = config.heads
        self.c_attn = nn.Linear(h, 3 * h)
        self.c_proj = nn.Linear(h, h)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: LayerCache | None = None, attn_mask: Tensor | None = None) -> Tensor:
        B, T, C = x.shape
        # one view + permute instead of split/view/transpose per tensor: the single-step decode is overhead-bound
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        S = k.size(2)
        dropout = self.dropout if self.training else 0.0
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        elif T == S:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # T new queries after S - T cached positions: causal with an offset.
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return self.resid_dropout(y) if self.training else y


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.c_fc = nn.Linear(h, 4 * h)
        self.c_proj = nn.Linear(4 * h, h)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return self.dropout(y) if self.training else y


class Block(nn.Module):
    """GPT-2 pre-LayerNorm block."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: LayerCache | None = None, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT2Stack(nn.Module):
    """Learned positions + blocks + final LayerNorm (GPT-2's `transformer`, fed with input embeddings)."""

    def __init__(self, config: ModelConfig, n_layers: int, n_positions: int, vocab: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, config.hidden_size)
        self.wpe = nn.Embedding(n_positions, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(n_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, embeds: Tensor, positions: int | Tensor = 0, cache: LayerCache | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        """embeds [B, T, H] at positions [T] or [B, T] (an int: consecutive from there); final hidden states."""
        if isinstance(positions, int):  # a slice of the table: cheaper than arange + lookup for one-step decoding
            x = embeds + self.wpe.weight[positions:positions + embeds.size(1)]
        else:
            x = embeds + self.wpe(positions)
        if self.training:
            x = self.drop(x)
        checkpointed = self.gradient_checkpointing and self.training and cache is None
        for block in self.h:
            if checkpointed:
                x = torch.utils.checkpoint.checkpoint(block, x, None, attn_mask, use_reentrant=False)
            else:
                x = block(x, cache, attn_mask)
        return self.ln_f(x)


class PatchLevelDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Linear(config.patch_size * VOCAB_SIZE, config.hidden_size)
        # vocab 1: GPT-2's word embedding is unused here (inputs are patch embeddings) but kept for the layout.
        self.base = GPT2Stack(config, config.patch_layers, config.patch_length, vocab=1)

    def embed(self, patches: Tensor) -> Tensor:
        """[B, N, P] ids → [B, N, H]; equals `patch_embedding(one_hot(patches).flatten(-2))` without the one-hot."""
        P = self.config.patch_size
        offsets = torch.arange(P, device=patches.device) * VOCAB_SIZE
        columns = self.patch_embedding.weight.t()  # [P * 128, H]
        return F.embedding(patches + offsets, columns).sum(dim=-2) + self.patch_embedding.bias

    def forward(self, patches: Tensor, start: int | Tensor = 0, cache: LayerCache | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        """Hidden states of `patches` [B, N, P] placed at positions start…start+N-1 (start may be [B, 1])."""
        if not isinstance(start, int):
            start = torch.arange(patches.size(1), device=patches.device) + start
        return self.base(self.embed(patches), start, cache, attn_mask)


class CharLevelHead(nn.Module):
    """GPT2LMHeadModel equivalent: `transformer` stack plus an LM head tied to `transformer.wte`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transformer = GPT2Stack(config, config.char_layers, config.char_positions, vocab=VOCAB_SIZE)
        self.lm_head = nn.Linear(config.hidden_size, VOCAB_SIZE, bias=False)
        self.lm_head.weight = self.transformer.wte.weight


class CharLevelDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.base = CharLevelHead(config)

    def hidden(self, patch_vectors: Tensor | None, chars: Tensor, start: int = 0,
               cache: LayerCache | None = None) -> Tensor:
        """Hidden states for a char sequence whose position 0 is the patch vector.

        With start == 0, `patch_vectors` [B, H] fills position 0 and `chars` [B, T] (may be empty) positions 1…T.
        With start > 0 (incremental decoding over `cache`), `chars` [B, T] sit at positions start…start+T-1 and
        `patch_vectors` is not used (it is already in the cache).
        """
        stack = self.base.transformer
        embeds = F.embedding(chars, stack.wte.weight)
        if start == 0:
            embeds = torch.cat([patch_vectors.unsqueeze(1), embeds], dim=1)
        return stack(embeds, start, cache)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.base.lm_head(hidden)


class NotaGenModel(nn.Module):
    """Patch-level decoder + character-level decoder, trained on every real target character."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_level_decoder = PatchLevelDecoder(config)
        self.char_level_decoder = CharLevelDecoder(config)
        self.apply(init_weights)
        scaled = 0.02 / math.sqrt(2 * max(config.patch_layers, 1))
        for name, param in self.patch_level_decoder.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, 0.0, scaled)
        scaled = 0.02 / math.sqrt(2 * max(config.char_layers, 1))
        for name, param in self.char_level_decoder.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, 0.0, scaled)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, ~30 % more compute)."""
        self.patch_level_decoder.base.gradient_checkpointing = enabled
        self.char_level_decoder.base.transformer.gradient_checkpointing = enabled

    def char_targets(self, patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """(patch hidden states predicting each target patch [M, H], target patches [M, P]).

        Inputs are every real patch but the last real one; targets every real patch but the first (BOS).
        Inputs are never modified (the reference zeroes `masks[:, 0]` in place on the caller's tensor).
        """
        hidden = self.patch_level_decoder(patches)
        masks = masks.bool()
        is_last = masks & ~torch.cat([masks[:, 1:], torch.zeros_like(masks[:, :1])], dim=1)
        input_mask = masks & ~is_last
        target_mask = masks.clone()
        target_mask[:, 0] = False
        return hidden[input_mask], patches[target_mask]

    def char_log_probs(self, patch_vectors: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability of every target character and which ones are real.

        Returns (log_probs [M, P], real [M, P]): position t of the char stack predicts character t+1, so the patch
        vector predicts c1 and c_t predicts c_{t+1}; pads (id 0) are not real targets.
        """
        inputs = targets[:, :-1]  # the last character predicts nothing
        hidden = self.char_level_decoder.hidden(patch_vectors, inputs)
        logits = self.char_level_decoder.logits(hidden).float()  # [M, P, 128]
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return log_probs, targets != PAD_ID

    def forward(self, patches: Tensor, masks: Tensor, pick: Tensor | None = None,
                reduction: Literal["mean", "sum", "sequence"] = "mean") -> Tensor:
        """Negative log-likelihood of every real target character: the one loss of the model.

        Training (`sum`, normalised by the trainer over its whole global batch), evaluation and perplexity
        (`mean`, `sum`) and DPO's sequence log-probabilities (`sequence`, negated) all come from here.

        patches: [B, N, P] character ids; masks: [B, N] with 1 for real patches. `pick` (indices into the target
        patches, see `char_subset`) trains the character decoder on a subset of them (the reference's
        PATCH_SAMPLING_BATCH_SIZE), which bounds memory on long pieces. `reduction`: `mean` per real character
        (a scalar), `sum` (a scalar), or `sequence` (the sum per sequence, [B]; no `pick`).
        """
        vectors, targets = self.char_targets(patches, masks)
        if pick is not None:
            if reduction == "sequence":
                raise ValueError("a per-sequence loss needs every target patch (no pick)")
            vectors, targets = vectors[pick], targets[pick]
        log_probs, real = self.char_log_probs(vectors, targets)
        if reduction == "mean":
            return -(log_probs * real).sum() / real.sum().clamp(min=1)
        if reduction == "sum":
            return -(log_probs * real).sum()
        if reduction != "sequence":
            raise ValueError(f"unknown reduction {reduction!r} (mean, sum or sequence)")
        B = patches.size(0)
        per_patch = (log_probs * real).sum(dim=1)
        target_mask = masks.bool().clone()
        target_mask[:, 0] = False
        owner = torch.arange(B, device=patches.device).unsqueeze(1).expand_as(target_mask)[target_mask]
        return -torch.zeros(B, device=patches.device, dtype=per_patch.dtype).index_add_(0, owner, per_patch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["NotaGenModel", "LayerCache", "BOS_ID", "char_subset", "target_char_counts"]
