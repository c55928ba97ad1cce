"""The plain generation loop, as the reference implementation runs it: no cache anywhere.

For every patch the patch decoder re-reads the whole context, and for every char the char decoder re-reads the
whole patch prefix; by default it also computes all 16 chars of every patch, as the reference does (chars after the
EOS are computed, then discarded). It makes the same decisions as the engine (shared `PieceState`), so with greedy
decoding both must write exactly the same characters. Used by the equivalence tests and the speed benchmark only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from notagen.generation.engine import GeneratedPiece, GenerationLimits, PieceRequest, PieceState
from notagen.generation.sampling import SamplingSettings, UniformStreams, sample
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer


def generate_plain(model: NotaGenModel, requests: Sequence[PieceRequest], sampling: SamplingSettings | None = None,
                   limits: GenerationLimits | None = None, patchilizer: Patchilizer | None = None,
                   full_patches: bool = True) -> list[GeneratedPiece]:
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
                vector = model.patch_level_decoder(ids)[:, -1]
                state.begin_patch()
                chars: list[int] = []
                for position in range(config.patch_size):
                    if state.patch_done and not full_patches:
                        break
                    prefix = torch.tensor([chars], dtype=torch.long, device=device)
                    hidden = model.char_level_decoder.hidden(vector, prefix)
                    logits = model.char_level_decoder.logits(hidden[:, -1]).float()
                    if state.patch_done:  # the reference computes and discards chars after the EOS
                        chars.append(int(logits.argmax()))
                        continue
                    char = state.forced_char(position)
                    if char is None:
                        state.constrain(logits[0], sampling)
                        uniforms = None if sampling.greedy else streams.take([0])
                        char = int(sample(logits, sampling, uniforms)[0])
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
