"""The fast generation engine: KV caches at both levels, batched pieces, stream re-windowing.

How one piece is written (as the official NotaGen inference code does, with its defects fixed):

* The context is the BOS patch plus the prompt's metadata lines (each line ends with EOS), or, for a continuation,
  the given text encoded with `encode_generate` (its trailing partial chunk becomes a *forced prefix* of the next
  patch, and the completed patch replaces it, so the patch grid stays aligned).
* The patch decoder (`PatchLevelDecoder.forward` with the engine's `KVCache`) advances one patch at a time; the
  char decoder (`CharLevelDecoder.hidden`, the model's own modules, with a second `KVCache` passed in) writes the
  next patch one char at a time, and stops at the patch's EOS (nothing is computed after it).
* The first generated patch that starts `[r:` gets `0/` forced after it, so pieces start at line 0 (the reference
  regenerates that patch with the forced prefix `[r:0/`; with greedy decoding both give the same characters).
* Generation stops at the EOS patch, or at a limit (bars, characters, patches, seconds).
* When the context reaches `patch_length` patches it is re-windowed as the reference does: metadata plus the last
  `cut_index` body lines, `cut_index` = half the body lines at the first overflow and reused afterwards, re-encoded
  with `encode_generate`; positions are absolute, so the row's cache is recomputed. If the kept lines still do not
  leave room for a new patch, fewer lines are kept (the reference would silently truncate the window's end).

Batches are ragged: rows are right-aligned in the patch cache (see `cache.KVCache`); a finished piece's row is
dropped or refilled with the next queued piece. Each piece samples from its own seeded stream, so with greedy
decoding a batch gives exactly the pieces generated one by one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from notagen.abc.text import body_start, is_body_line
from notagen.config import EOS_ID
from notagen.generation.cache import KVCache
from notagen.generation.constraints import StrictDecoder, sample_strict
from notagen.generation.sampling import SamplingSettings, UniformStreams
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer, is_eos_patch

FORCED_START = "[r:0/"
STOP_REASONS = ("eos", "max_bars", "max_chars", "max_patches", "max_seconds", "context_full")


@dataclass(frozen=True)
class PieceRequest:
    """One piece to write: its context text (prompt lines, or the beginning of a piece with `[r:]` lines)."""

    context: str = ""
    seed: int = 0


@dataclass(frozen=True)
class GenerationLimits:
    """When to stop a piece that has not ended by itself. None = no limit."""

    max_bars: int | None = None
    """Body lines (one bar of every voice each) to write."""
    max_chars: int | None = 102_400
    """Characters to write (the reference gives up at 102,400)."""
    max_patches: int | None = None
    max_seconds: float | None = None


@dataclass
class GeneratedPiece:
    """A finished (or stopped) piece."""

    request: PieceRequest
    index: int
    text: str
    """Context plus generated text, `[r:]` annotations and prompt lines included."""
    generated: str
    stop_reason: str
    bars: int
    patches: int
    rewindows: int
    seconds: float
    strict_off: str | None = None
    """Why strict decoding stood aside for this piece (a given score that breaks the rules), or None."""

    @property
    def ended(self) -> bool:
        """True when the model wrote the EOS patch itself."""
        return self.stop_reason == "eos"

    @property
    def chars_per_second(self) -> float:
        return len(self.generated) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    """What the progress callback receives after every patch round."""

    active: int
    done: int
    total: int
    bars: int
    """Bars written so far by the active pieces (the longest one)."""
    chars: int
    """Characters written so far by every piece, finished ones included."""
    chars_per_second: float
    elapsed: float


@dataclass
class EngineStats:
    """Work counters (tests use them to check that nothing is recomputed)."""

    patch_steps: int = 0
    prefills: int = 0
    prefill_patches: int = 0
    char_steps: int = 0


def body_lines_of(text: str) -> tuple[list[str], list[str]]:
    """(metadata lines, body lines) of a generated text, split where the patchilizer splits it (`body_start`).

    Every line keeps its newline except an unfinished last line. Empty lines are dropped.
    """
    lines = text.split("\n")
    start = body_start(lines)
    metadata = [line + "\n" for line in lines[:start] if line]
    body = [line + "\n" for line in lines[start:-1]] + ([lines[-1]] if start < len(lines) else [])
    return metadata, [line for line in body if line.strip("\n")]


def split_context(encoded: list[list[int]], patch_size: int) -> tuple[list[list[int]], list[int]]:
    """`encode_generate` output → (full patches, forced prefix of the next patch)."""
    if encoded and len(encoded[-1]) < patch_size:
        return encoded[:-1], list(encoded[-1])
    return encoded, []


def rewindow(text: str, cut_index: int | None, patchilizer: Patchilizer, unit_closed: bool = False
             ) -> tuple[list[list[int]], list[int], int] | None:
    """Re-window a context that has reached `patch_length`: (full patches, forced prefix, cut_index) or None.

    Keeps the metadata and the last `cut_index` body lines (cut_index = half the body lines when None), dropping
    more lines while the window would leave no room for two more patches. None when not even one line fits.

    The most lines that fit is found by bisection: a window's patch count grows with the lines it keeps, and every
    line takes at least one patch, so at most `patch_length` lines are ever encoded, about log2(patch_length)
    times: the cost does not grow with the length of the piece beyond splitting its text into lines.
    """
    metadata, body = body_lines_of(text)
    if not body:
        return None
    if cut_index is None:
        cut_index = max(1, len(body) // 2)
    limit = patchilizer.patch_length - 2

    def encoded(keep: int) -> tuple[list[list[int]], list[int]]:
        window = "".join(metadata + body[-keep:])
        return close_finished_line(*split_context(patchilizer.encode_generate(window), patchilizer.patch_size),
                                   window, patchilizer.patch_size, unit_closed)

    low, high = 0, min(cut_index, len(body), limit)   # invariant: `low` lines fit (0 trivially), `high + 1` don't
    best: tuple[list[list[int]], list[int]] | None = None
    while low < high:
        middle = (low + high + 1) // 2
        window = encoded(middle)
        if len(window[0]) <= limit:
            low, best = middle, window
        else:
            high = middle - 1
    if best is None:   # not even one line fits
        return None
    return best[0], best[1], cut_index


def close_finished_line(full: list[list[int]], prefix: list[int], text: str, patch_size: int,
                        unit_closed: bool = False) -> tuple[list[list[int]], list[int]]:
    """A context that ends with complete lines, or (`unit_closed`) with a unit the model has already ended with
    its EOS: close its last unit as training data does (EOS, padding) instead of leaving it as a forced prefix the
    model would extend, so the next patch starts a new line or unit. (Re-windowing right after a voice's unit ended
    once reopened that unit, and strict decoding, which had seen it end, found no character to write.)"""
    if prefix and (text.endswith("\n") or unit_closed):
        return full + [prefix + [EOS_ID] + [0] * (patch_size - len(prefix) - 1)], []
    return full, prefix


class PieceState:
    """Everything about one piece in progress that is not a tensor: text, forced chars, counters, limits.

    Shared by the engine and the plain reference loop, so both make exactly the same decisions.
    """

    def __init__(self, request: PieceRequest, index: int, patchilizer: Patchilizer, limits: GenerationLimits,
                 stream: int = 0, strict: bool = False) -> None:
        self.request = request
        self.index = index
        self.patchilizer = patchilizer
        self.limits = limits
        self.stream = stream
        self.text = request.context
        self.context_chars = len(request.context)
        self.bars = 0
        self.patches = 0
        self.rewindows = 0
        self.cut_index: int | None = None
        self.started = time.perf_counter()
        self.seconds = 0.0
        self.stop_reason: str | None = None
        _, body = body_lines_of(self.text)
        self.body_started = bool(body)
        self.line = self.text.rsplit("\n", 1)[-1]
        self.prefix: list[int] = []
        self.chars: list[int] = []
        self.forced: list[int] = []
        self.patch_done = False
        self.strict = strict
        self.decoder: StrictDecoder | None = None

    # -- context ----------------------------------------------------------------------------------------------
    def initial_context(self) -> list[list[int]] | None:
        """Full patches of the starting context (the forced prefix is kept in `self.prefix`); None = cannot start."""
        patches = self._initial_patches()
        if patches is not None and self.strict:
            self.decoder = StrictDecoder(self.text, self.limits.max_bars)
        return patches

    def _initial_patches(self) -> list[list[int]] | None:
        p = self.patchilizer
        if not self.body_started:
            lines = [line + "\n" for line in self.text.split("\n") if line]
            self.text = "".join(lines)
            self.context_chars = len(self.text)
            self.line = ""
            patches = [p.bos_patch] + [patch for line in lines for patch in p.unit_to_patches(line)]
            if len(patches) > p.patch_length - 2:
                self.stop("context_full")
                return None
            return patches
        full, prefix = close_finished_line(*split_context(p.encode_generate(self.text), p.patch_size), self.text,
                                           p.patch_size)
        if len(full) > p.patch_length - 2:
            window = rewindow(self.text, None, p)
            if window is None:
                self.stop("context_full")
                return None
            full, prefix, self.cut_index = window
        self.prefix = prefix
        return full

    # -- one patch, char by char ------------------------------------------------------------------------------
    def begin_patch(self) -> None:
        self.chars = []
        self.forced = list(self.prefix)
        self.patch_done = False

    def forced_char(self, position: int) -> int | None:
        """The char that must be written at `position` of the current patch, if any."""
        return self.forced[position] if position < len(self.forced) else None

    def current_line(self) -> str:
        """The text of the line being written, up to the next char."""
        new = self.chars[len(self.prefix):]
        return self.line + "".join(chr(c) for c in new if c != EOS_ID)


    def accept(self, char: int) -> bool:
        """Add one char to the current patch; True when the patch is complete (its EOS, or 16 chars)."""
        if self.decoder is not None and len(self.chars) >= len(self.prefix):  # the prefix is context, read already
            self.decoder.accept(char, len(self.chars))
        self.chars.append(char)
        if not self.body_started and len(self.chars) == 3 and self.chars == [ord(c) for c in "[r:"]:
            self.forced = [ord(c) for c in FORCED_START]
        self.patch_done = char == EOS_ID or len(self.chars) >= self.patchilizer.patch_size
        return self.patch_done

    def finish_patch(self) -> tuple[str, list[int] | None]:
        """Close the current patch: ("stop", None) when the piece ends here, else ("append", the 16 ids).

        The caller appends the patch to the context, or re-windows (`needs_rewindow`, `rewindow`) when full.
        """
        p = self.patchilizer
        patch = self.chars + [0] * (p.patch_size - len(self.chars))
        if is_eos_patch(patch):
            return self.stop("eos"), None
        self.patches += 1
        new_text = p.patch_to_text(patch)[len(self.prefix):]
        if not self.body_started and p.patch_to_text(patch).startswith("[r:"):
            self.body_started = True
        self.prefix = []
        stop = self._add_text(new_text)
        if stop is not None:
            return self.stop(stop), None
        if self.limits.max_patches is not None and self.patches >= self.limits.max_patches:
            return self.stop("max_patches"), None
        if self.limits.max_seconds is not None and time.perf_counter() - self.started >= self.limits.max_seconds:
            return self.stop("max_seconds"), None
        return "append", patch

    def _add_text(self, new_text: str) -> str | None:
        """Append generated text, count finished body lines; a stop reason when a limit is reached."""
        pieces = new_text.split("\n")
        for i, part in enumerate(pieces[:-1]):
            line = self.line + part
            self.line = ""
            if is_body_line(line):
                self.bars += 1
                # Strict decoding plans the piece's length within the limit and ends it with the EOS patch.
                strict = self.decoder is not None and not self.decoder.disabled
                if self.limits.max_bars is not None and self.bars >= self.limits.max_bars and not strict:
                    self.text += "\n".join(pieces[:i + 1]) + "\n"
                    return "max_bars"
        self.line += pieces[-1]
        self.text += new_text
        if self.limits.max_chars is not None and len(self.text) - self.context_chars >= self.limits.max_chars:
            return "max_chars"
        return None

    def needs_rewindow(self, context_patches: int) -> bool:
        """True when the context (after appending the new patch) has reached the patch decoder's window."""
        return context_patches >= self.patchilizer.patch_length

    def rewindow(self) -> list[list[int]] | None:
        """New context after an overflow (None: stopped, nothing fits)."""
        unit_closed = bool(self.chars) and self.chars[-1] == EOS_ID
        window = rewindow(self.text, self.cut_index, self.patchilizer, unit_closed)
        if window is None:
            self.stop("context_full")
            return None
        full, self.prefix, self.cut_index = window
        self.rewindows += 1
        return full

    def stop(self, reason: str) -> str:
        self.stop_reason = reason
        self.seconds = time.perf_counter() - self.started
        return "stop"

    @property
    def generated(self) -> str:
        return self.text[self.context_chars:]

    def result(self) -> GeneratedPiece:
        return GeneratedPiece(request=self.request, index=self.index, text=self.text, generated=self.generated,
                              stop_reason=self.stop_reason or "eos", bars=self.bars, patches=self.patches,
                              rewindows=self.rewindows, seconds=self.seconds,
                              strict_off=self.decoder.disabled if self.decoder is not None else None)


ProgressCallback = Callable[[Progress], None]


@dataclass
class _Row:
    state: PieceState
    context_patches: int


class GenerationEngine:
    """Writes pieces with a trained `NotaGenModel`, caching keys/values at the patch and the char level."""

    def __init__(self, model: NotaGenModel, patchilizer: Patchilizer | None = None,
                 device: torch.device | str | None = None, cache_slack: int | None = None) -> None:
        config = model.config
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.config = config
        self.patchilizer = patchilizer or Patchilizer(patch_size=config.patch_size, patch_length=config.patch_length)
        if (self.patchilizer.patch_size, self.patchilizer.patch_length) != (config.patch_size, config.patch_length):
            raise ValueError("patchilizer and model disagree on patch_size / patch_length")
        parameter = next(model.parameters())
        self.device = parameter.device
        self.dtype = parameter.dtype
        self.head_dim = config.hidden_size // config.heads
        slack = cache_slack if cache_slack is not None else max(16, config.patch_length // 4)
        self.capacity = config.patch_length + slack
        self._char_caches: dict[int, KVCache] = {}
        self.stats = EngineStats()
        self.record_patches = False
        self.patch_log: dict[int, list[list[int]]] = {}

    # -- public -----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[PieceRequest], sampling: SamplingSettings | None = None,
                 limits: GenerationLimits | None = None, batch_size: int = 1,
                 progress: ProgressCallback | None = None) -> list[GeneratedPiece]:
        """Write one piece per request (in batches of `batch_size`); results in request order."""
        sampling = sampling or SamplingSettings()
        limits = limits or GenerationLimits()
        with torch.inference_mode():
            return self._run(list(requests), sampling, limits, max(1, batch_size), progress)

    # -- model calls ------------------------------------------------------------------------------------------
    def _new_cache(self, layers: int, batch: int, capacity: int, zeroed: bool = True) -> KVCache:
        return KVCache(layers, batch, self.config.heads, self.head_dim, capacity, self.device, self.dtype, zeroed)

    def _prefill(self, patches: list[list[int]], capacity: int | None = None) -> tuple[KVCache, Tensor]:
        """Run the patch decoder over a whole context (one row); its cache and the last hidden state [H].

        With `capacity`, the cache is the one-row batch cache itself: allocated uninitialised (its one row starts
        at slot 0 and is never masked), so memory grows with the context instead of being taken up front."""
        cache = self._new_cache(self.config.patch_layers, 1, capacity or len(patches), zeroed=capacity is None)
        ids = torch.tensor([patches], dtype=torch.long, device=self.device)
        hidden = self.model.patch_level_decoder(ids, 0, cache)
        self.stats.prefills += 1
        self.stats.prefill_patches += len(patches)
        return cache, hidden[0, -1]

    def _write_patches(self, rows: list[_Row], vectors: Tensor, sampling: SamplingSettings,
                       streams: UniformStreams) -> None:
        """Generate the next patch of every row, char by char, over the char-level cache."""
        decoder = self.model.char_level_decoder
        batch = len(rows)
        cache = self._char_caches.get(batch)
        if cache is None:
            cache = self._char_caches[batch] = self._new_cache(self.config.char_layers, batch, self.config.patch_size)
        cache.reset()  # reused from patch to patch: every step overwrites the positions it reads
        states = [row.state for row in rows]
        for state in states:
            state.begin_patch()
        no_chars = torch.zeros(batch, 0, dtype=torch.long, device=self.device)
        hidden = decoder.hidden(vectors, no_chars, 0, cache)[:, -1]
        for position in range(self.config.patch_size):
            forced = [None if s.patch_done else s.forced_char(position) for s in states]
            sampled = [i for i, s in enumerate(states) if not s.patch_done and forced[i] is None]
            tokens: list[int] = [0] * batch
            if sampled:
                logits = decoder.logits(hidden).float()
                uniforms = None
                if not sampling.greedy:
                    uniforms = torch.full((batch,), 0.5, device=self.device)
                    uniforms[sampled] = streams.take([states[i].stream for i in sampled])
                chosen = set(sampled)
                tokens = sample_strict(logits, [s.decoder if i in chosen else None for i, s in enumerate(states)],
                                       sampling, uniforms, [len(s.chars) for s in states])
            feed = [0] * batch
            for i, state in enumerate(states):
                if state.patch_done:
                    continue
                char = forced[i] if forced[i] is not None else tokens[i]
                feed[i] = char
                state.accept(char)
            self.stats.char_steps += 1
            if all(s.patch_done for s in states):
                break
            ids = torch.tensor(feed, dtype=torch.long, device=self.device).unsqueeze(1)
            hidden = decoder.hidden(None, ids, position + 1, cache)[:, -1]

    # -- the batch loop ---------------------------------------------------------------------------------------
    def _run(self, requests: list[PieceRequest], sampling: SamplingSettings, limits: GenerationLimits,
             batch_size: int, progress: ProgressCallback | None) -> list[GeneratedPiece]:
        queue = deque(enumerate(requests))
        results: dict[int, GeneratedPiece] = {}
        rows: list[_Row] = []
        cache = self._new_cache(self.config.patch_layers, 0, self.capacity)
        vectors = torch.zeros(0, self.config.hidden_size, device=self.device, dtype=self.dtype)
        streams = UniformStreams([], self.device)
        started = time.perf_counter()
        written_done = 0
        self.patch_log = {}

        while queue or rows:
            # Fill free rows with queued pieces.
            new_rows: list[tuple[_Row, KVCache, Tensor]] = []
            while queue and len(rows) + len(new_rows) < batch_size:
                index, request = queue.popleft()
                state = PieceState(request, index, self.patchilizer, limits, streams.add(request.seed),
                                   strict=sampling.strict)
                context = state.initial_context()
                if context is None:
                    results[index] = state.result()
                    continue
                if batch_size == 1:  # the row is the whole batch: prefill straight into the batch cache, no copy
                    del cache
                    cache, vector = self._prefill(context, self.capacity)
                    rows.append(_Row(state, len(context)))
                    vectors = vector.unsqueeze(0)
                else:
                    row_cache, vector = self._prefill(context)
                    new_rows.append((_Row(state, len(context)), row_cache, vector))
                if self.record_patches:
                    self.patch_log[index] = [list(p) for p in context]
            if new_rows:
                cache.add_rows(len(new_rows))  # one copy of the buffers for all new rows
                for row, row_cache, _ in new_rows:
                    cache.place_row(len(rows), row_cache)
                    rows.append(row)
                vectors = torch.cat([vectors, torch.stack([vector for _, _, vector in new_rows])])
            if not rows:
                break

            self._write_patches(rows, vectors, sampling, streams)

            keep: list[int] = []
            step_patches: list[list[int]] = []
            rewindowed: dict[int, list[list[int]]] = {}
            for i, row in enumerate(rows):
                action, patch = row.state.finish_patch()
                if action == "append":
                    assert patch is not None
                    if self.record_patches:
                        self.patch_log[row.state.index].append(patch)
                    if row.state.needs_rewindow(row.context_patches + 1):
                        window = row.state.rewindow()
                        if window is None:
                            action = "stop"
                        else:
                            rewindowed[i] = window
                            patch = [0] * self.config.patch_size  # placeholder; the row is replaced below
                if action == "stop":
                    results[row.state.index] = row.state.result()
                    written_done += len(row.state.generated)
                    continue
                keep.append(i)
                step_patches.append(patch or [0] * self.config.patch_size)

            if len(keep) < len(rows):
                cache.select_rows(keep)
                vectors = vectors[keep]
                rewindowed = {keep.index(i): w for i, w in rewindowed.items()}
                rows = [rows[i] for i in keep]

            if rows and len(rewindowed) < len(rows):
                cache.ensure_room(1)
                ids = torch.tensor(step_patches, dtype=torch.long, device=self.device).unsqueeze(1)
                mask = cache.attention_mask()
                hidden = self.model.patch_level_decoder(ids, cache.positions(), cache, mask)
                vectors = hidden[:, -1].clone()
                self.stats.patch_steps += 1
                for row in rows:
                    row.context_patches += 1
            for i, window in rewindowed.items():
                if len(rows) == 1:  # replace the whole cache: never two copies of a long context at once
                    del cache
                    cache, vectors[i] = self._prefill(window, self.capacity)
                else:
                    row_cache, vectors[i] = self._prefill(window)
                    cache.place_row(i, row_cache)
                rows[i].context_patches = len(window)

            if progress is not None:
                elapsed = time.perf_counter() - started
                chars = written_done + sum(len(r.state.generated) for r in rows)
                progress(Progress(active=len(rows), done=len(results), total=len(requests),
                                  bars=max((r.state.bars for r in rows), default=0), chars=chars,
                                  chars_per_second=chars / elapsed if elapsed > 0 else 0.0, elapsed=elapsed))
        return [results[i] for i in range(len(requests))]


__all__ = ["GenerationEngine", "GenerationLimits", "GeneratedPiece", "PieceRequest", "PieceState", "Progress",
           "EngineStats", "rewindow", "body_lines_of", "split_context"]
