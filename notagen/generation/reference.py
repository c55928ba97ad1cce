"""The plain generation loop, as the reference implementation runs it: no cache anywhere; and the official
architecture rebuilt from transformers' GPT-2 classes, to run that loop exactly as the original code does.

For every patch the patch decoder re-reads the whole context, and for every char the char decoder re-reads the
whole patch prefix; by default it also computes all 16 chars of every patch, as the reference does (chars after the
EOS are computed, then discarded). It makes the same decisions as the engine (shared `PieceState`), so with greedy
decoding both must write exactly the same characters. `generate_plain` runs either our `NotaGenModel` or a
`ReferenceNotaGen` (HF `GPT2Model` / `GPT2LMHeadModel`, one-hot patch embedding, as in the official NotaGen code;
needs `transformers`, a test dependency). Used by the equivalence and parity tests and the benchmarks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from notagen.config import PAD_ID, VOCAB_SIZE, ModelConfig
from notagen.generation.constraints import sample_strict
from notagen.generation.engine import GeneratedPiece, GenerationLimits, PieceRequest, PieceState
from notagen.generation.sampling import SamplingSettings, UniformStreams
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer


def gpt2_config(layers: int, positions: int, hidden: int, vocab: int) -> Any:
    """GPT2Config as the reference builds it: GPT-2 defaults except these sizes (heads = hidden // 64)."""
    import transformers

    return transformers.GPT2Config(
        num_hidden_layers=layers, max_length=positions, max_position_embeddings=positions, n_embd=hidden,
        num_attention_heads=hidden // 64, vocab_size=vocab, bos_token_id=None, eos_token_id=None,
        attn_implementation="eager",
    )


class ReferencePatchLevelDecoder(nn.Module):
    """One-hot patches → Linear(16·128 → H) → GPT2Model on inputs_embeds."""

    def __init__(self, config: ModelConfig) -> None:
        import transformers

        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.patch_size * VOCAB_SIZE, config.hidden_size)
        self.base = transformers.GPT2Model(
            gpt2_config(config.patch_layers, config.patch_length, config.hidden_size, vocab=1))

    def forward(self, patches: Tensor, masks: Tensor | None = None) -> Tensor:
        one_hot = F.one_hot(patches, num_classes=VOCAB_SIZE).to(self.patch_embedding.weight.dtype)
        embeds = self.patch_embedding(one_hot.reshape(len(patches), -1, self.patch_size * VOCAB_SIZE))
        return self.base(inputs_embeds=embeds, attention_mask=masks).last_hidden_state


class ReferenceCharLevelDecoder(nn.Module):
    """GPT2LMHeadModel over [patch vector, c1 … c16] with labels [1, c1 … c16] (pads → -100)."""

    def __init__(self, config: ModelConfig) -> None:
        import transformers

        super().__init__()
        self.base = transformers.GPT2LMHeadModel(
            gpt2_config(config.char_layers, config.patch_size + 1, config.hidden_size, vocab=VOCAB_SIZE))

    def forward(self, encoded_patches: Tensor, target_patches: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, per-character log-probabilities [M, 16], which of them are real targets [M, 16])."""
        special = torch.ones_like(target_patches[:, :1])
        sequence = torch.cat([special, target_patches], dim=1)
        labels = sequence.masked_fill(sequence == PAD_ID, -100)
        attention = (labels != -100).long()
        embeds = F.embedding(sequence, self.base.transformer.wte.weight)
        embeds = torch.cat([encoded_patches.unsqueeze(1), embeds[:, 1:]], dim=1)
        output = self.base(inputs_embeds=embeds, attention_mask=attention, labels=labels)
        # GPT-2's shift: position t predicts label t + 1.
        log_probs = torch.log_softmax(output.logits[:, :-1].float(), dim=-1)
        targets = labels[:, 1:]
        picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return output.loss, picked, targets != -100

    def next_logits(self, vector: Tensor, chars: Tensor) -> Tensor:
        """Logits of the next char after `chars` [B, T] in the patch whose vector is `vector` [B, H]: the whole
        prefix is run again, as the official `generate` does for every char."""
        embeds = torch.cat([vector.unsqueeze(1), F.embedding(chars, self.base.transformer.wte.weight)], dim=1)
        return self.base(inputs_embeds=embeds).logits[:, -1]


class ReferenceNotaGen(nn.Module):
    """NotaGenLMHeadModel: inputs = all real patches but the last real one, targets = all real but patch 0.

    Loads an official state dict strictly (`load_state_dict(torch.load(path)["model"])`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_level_decoder = ReferencePatchLevelDecoder(config)
        self.char_level_decoder = ReferenceCharLevelDecoder(config)

    def forward(self, patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        masks = masks.clone()  # the reference zeroes masks[:, 0] in place; keep the caller's tensor intact
        encoded = self.patch_level_decoder(patches, masks)
        left_shift_masks = masks * (masks.flip(1).cumsum(1).flip(1) > 1)
        masks[:, 0] = 0
        return self.char_level_decoder(encoded[left_shift_masks == 1], patches[masks == 1])

    @classmethod
    def from_model(cls, model: NotaGenModel) -> ReferenceNotaGen:
        """The reference model holding `model`'s weights (through the official layout), in eval mode."""
        from notagen.checkpoint import official_state_dict

        reference = cls(model.config)
        reference.load_state_dict(official_state_dict(model), strict=True)
        return reference.eval()


def _patch_vector(model: NotaGenModel | ReferenceNotaGen, ids: Tensor) -> Tensor:
    return model.patch_level_decoder(ids)[:, -1]


def _next_logits(model: NotaGenModel | ReferenceNotaGen, vector: Tensor, chars: Tensor) -> Tensor:
    if isinstance(model, ReferenceNotaGen):
        return model.char_level_decoder.next_logits(vector, chars)
    hidden = model.char_level_decoder.hidden(vector, chars)
    return model.char_level_decoder.logits(hidden[:, -1])


def generate_plain(model: NotaGenModel | ReferenceNotaGen, requests: Sequence[PieceRequest],
                   sampling: SamplingSettings | None = None, limits: GenerationLimits | None = None,
                   patchilizer: Patchilizer | None = None, full_patches: bool = True) -> list[GeneratedPiece]:
    """Write each piece one by one, recomputing everything at every step."""
    sampling = sampling or SamplingSettings()
    limits = limits or GenerationLimits()
    config = model.config
    patchilizer = patchilizer or Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
    device = next(model.parameters()).device
    model.eval()
    results = []
    with torch.inference_mode():
        for index, request in enumerate(requests):
            streams = UniformStreams([request.seed], device)
            state = PieceState(request, index, patchilizer, limits, stream=0, strict=sampling.strict)
            context = state.initial_context()
            while context is not None:
                ids = torch.tensor([context], dtype=torch.long, device=device)
                vector = _patch_vector(model, ids)
                state.begin_patch()
                chars: list[int] = []
                for position in range(config.patch_size):
                    if state.patch_done and not full_patches:
                        break
                    prefix = torch.tensor([chars], dtype=torch.long, device=device)
                    logits = _next_logits(model, vector, prefix).float()
                    if state.patch_done:  # the reference computes and discards chars after the EOS
                        chars.append(int(logits.argmax()))
                        continue
                    char = state.forced_char(position)
                    if char is None:
                        uniforms = None if sampling.greedy else streams.take([0])
                        char = sample_strict(logits, [state.decoder], sampling, uniforms, [len(state.chars)])[0]
                    chars.append(char)
                    state.accept(char)
                action, patch = state.finish_patch()
                if action == "stop":
                    break
                assert patch is not None
                context = context + [patch]
                if state.needs_rewindow(len(context)):
                    context = state.rewindow()
            results.append(state.result())
    return results


__all__ = ["ReferenceNotaGen", "generate_plain", "gpt2_config"]
