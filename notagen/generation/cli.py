"""`notagen generate` and `notagen prompts`: the command line over the library.

Each piece gets a folder `OUTPUT/<name>/` with `<name>.raw.abc` (the model's text: prompt lines, `[r:]`, reduced
rests), `<name>.interleaved.abc` (full interleaved ABC), `<name>.abc` (standard ABC), `<name>.musicxml`, `.mid`,
`.svg` / `-N.svg` pages, `.png` pages, `.wav`, and `<name>.json` (prompt, seed, sampling, model, timings, validity,
attempts) — the table in `notagen.formats`, written by `notagen.generation.output`. `OUTPUT/manifest.json` lists
the run. Every file is written atomically. Continuation (`--continue-from`): `notagen.generation.continuation`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from notagen.errors import InputError
from notagen.formats import OUTPUT_FORMATS, check_formats
from notagen.generation.sampling import SamplingSettings
from notagen.io import atomic_write_json


class _ProgressPrinter:
    """Live progress on stderr: a rewritten line on a terminal, a line every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        if now - self.last < (0.25 if self.tty else 5.0):
            return
        self.last = now
        text = (f"generating: {event.done}/{event.total} done, {event.active} writing | bars {event.bars} | "
                f"{event.chars} chars, {event.chars_per_second:.0f} chars/s | {event.elapsed:.1f} s")
        if self.tty:
            print("\r" + text.ljust(100), end="", file=sys.stderr, flush=True)
            self.shown = True
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr, flush=True)


def generate_command(period: str | None = None, composer: str | None = None, instrumentation: str | None = None,
                     n: int = 1, seed: int = 0, checkpoint: str | None = None, output: Path = Path("pieces"),
                     formats: list[str] | None = None,
                     temperature: float = SamplingSettings.temperature, top_k: int = SamplingSettings.top_k,
                     top_p: float = SamplingSettings.top_p,
                     sampling_order: Literal["reference", "standard"] = SamplingSettings.order,
                     max_bars: int | None = None,
                     max_seconds: float | None = None, continue_from: Path | None = None, batch_size: int = 4,
                     device: str = "auto", precision: Literal["fp32", "bf16", "int8"] = "fp32",
                     retries: int = 3, strict: bool = SamplingSettings.strict) -> int:
    """Write new pieces with a trained model, as scores you can see and hear.

    Each piece goes to OUTPUT/<name>/: raw and interleaved ABC, standard ABC, MusicXML, MIDI, SVG and PNG pages,
    WAV, and a JSON manifest (prompt, seed, sampling, model, timings, validity, attempts). A piece whose ABC comes
    out invalid is regenerated with the next seed, up to --retries times; its validity is always reported.

    Args:
        period: Prompt period, e.g. Romantic (see `notagen prompts`). No prompt at all: unconditional.
        composer: Prompt composer, "Last, First", e.g. "Chopin, Frederic".
        instrumentation: Prompt instrumentation, e.g. Keyboard.
        n: Number of pieces.
        seed: Seed of the first piece; piece i uses seed + i.
        checkpoint: Model directory (notagen train), official .pth file, hf:OWNER/REPO/FILE, or an official
            name (notagen-x, small, medium, large, large-finetune, large-rl; fetched from the Hugging Face cache or
            downloaded once); default: the bundled model.
        output: Output folder.
        formats: Files to write per piece, any of {formats} (default: all; the JSON manifest is always
            written).
        temperature: Sampling temperature.
        top_k: Keep the k most likely characters (0 = all; 1 = greedy).
        top_p: Keep the most likely characters up to this probability mass.
        sampling_order: reference = top-k, top-p, then temperature (the official order); standard = temperature
            first.
        max_bars: Stop a piece after this many bars.
        max_seconds: Stop a piece after this many seconds.
        continue_from: Continue this score (ABC, MusicXML or MIDI) instead of starting from nothing.
        batch_size: Pieces written at the same time.
        device: cpu, cuda, mps, or auto.
        precision: Weights: fp32; bf16 (half the memory; fast on CPUs with native bf16 and on GPUs); int8 (CPU
            only: a quarter of the memory and about 3-4x faster than fp32 for large models). Converted copies are
            cached, so only the first start converts.
        retries: Regenerations of an invalid piece.
        strict: Strict decoding: only characters that keep the piece valid by every rule of `notagen check` are
            sampled (bars that last the meter in every voice, ties to the same note, parts in their ranges …);
            --no-strict samples the model's raw distribution, as the reference implementation does.

    Examples:
        notagen generate --period Baroque --composer "Bach, Johann Sebastian" --instrumentation Choral -n 4
        notagen generate --composer "Mozart, Wolfgang Amadeus" -o pieces   # the other fields follow if unique
        notagen generate --checkpoint runs/mini --continue-from start.musicxml --max-bars 32
        notagen generate --checkpoint notagen-x --precision int8 --period Romantic --composer "Chopin, Frederic" \
            --instrumentation Keyboard
    """
    from notagen import weights
    from notagen.generation.continuation import continuation_context, with_prompt
    from notagen.generation.engine import GenerationEngine, GenerationLimits, PieceRequest
    from notagen.generation.output import model_summary, piece_manifest, piece_name, write_piece
    from notagen.generation.postprocess import generate_checked
    from notagen.prompt import prompt_context, resolve_prompt

    if n < 1:
        raise InputError(f"-n must be at least 1, got {n}")
    formats = check_formats(formats)
    if max_bars is not None and max_bars < 1:
        raise InputError(f"--max-bars must be at least 1, got {max_bars}")
    sampling = SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p, order=sampling_order,
                                strict=strict)
    limits = GenerationLimits(max_bars=max_bars, max_seconds=max_seconds)
    loaded = weights.open_checkpoint(checkpoint, device=weights.pick_device(device), precision=precision)
    prompt = resolve_prompt(period, composer, instrumentation, loaded.prompts)
    if prompt is not None and not loaded.prompts:
        print("notagen: warning: this model has no prompt registry; the prompt is used unchecked", file=sys.stderr)
    context = prompt_context(prompt)
    if continue_from is not None:
        context = with_prompt(prompt, continuation_context(continue_from, remaining=max_bars,
                                                           max_lines=loaded.model.config.patch_length))
    requests = [PieceRequest(context=context, seed=seed + i) for i in range(n)]
    engine = GenerationEngine(loaded.model)
    printer = _ProgressPrinter()
    started = time.perf_counter()
    try:
        results = generate_checked(engine, requests, sampling, limits, retries=retries, batch_size=batch_size,
                                   progress=printer)
    finally:
        printer.close()
    model_info = model_summary(loaded, engine.device)
    output.mkdir(parents=True, exist_ok=True)
    summary = []
    for index, result in enumerate(results):
        piece = result.piece
        name = piece_name(index, result)
        manifest = piece_manifest(name, result, requests[index].seed, sampling, limits, model_info,
                                  prompt=prompt and prompt.to_dict(),
                                  continue_from=str(continue_from) if continue_from else None)
        manifest = write_piece(output, name, result, formats, manifest)
        summary.append({"name": name, "valid": manifest["valid"], "stop_reason": piece.stop_reason,
                        "bars": piece.bars, "retries": result.retries, "files": manifest["files"]})
        status = "valid" if manifest["valid"] else f"INVALID ({manifest['error']})"
        print(f"{output / name}: {piece.bars} bars, {piece.stop_reason}, {status}"
              + (f", skipped {', '.join(sorted(manifest['skipped']))}" if manifest["skipped"] else ""))
        for fmt, reason in manifest["skipped"].items():
            if fmt in ("wav", "png"):
                print(f"notagen: warning: {name}: no {fmt}: {reason}", file=sys.stderr)
    atomic_write_json(output / "manifest.json", {"pieces": summary, "prompt": prompt and prompt.to_dict(),
                                                 "n": n, "seed": seed,
                                                 "sampling": sampling.to_dict(), "model": model_info,
                                                 "seconds": round(time.perf_counter() - started, 3)})
    valid = sum(item["valid"] for item in summary)
    print(f"{valid}/{n} valid pieces in {output} ({time.perf_counter() - started:.1f} s)")
    return 0


generate_command.__doc__ = (generate_command.__doc__ or "").replace("{formats}", " ".join(OUTPUT_FORMATS))


def prompts_command(checkpoint: str | None = None, as_json: bool = False) -> int:
    """List the (period, composer, instrumentation) prompts a model was trained with.

    Args:
        checkpoint: Model directory, official .pth file, hf:OWNER/REPO/FILE or official name (notagen-x …);
            default: the bundled model. The official fine-tuned weights list their 112 prompts without being
            downloaded.
        as_json: Print JSON instead of a table.
    """
    from notagen.weights import prompts_of

    source, prompts = prompts_of(checkpoint)
    if as_json:
        print(json.dumps(prompts, indent=2))
        return 0
    if not prompts:
        print(f"{source}: no prompt registry (an unconditional model)")
        return 0
    widths = [max(len(str(p[key])) for p in prompts + [{key: key}]) for key in ("period", "composer",
                                                                                  "instrumentation")]
    counted = any(p["count"] for p in prompts)
    print(f"{'period':<{widths[0]}}  {'composer':<{widths[1]}}  {'instrumentation':<{widths[2]}}"
          + ("  pieces" if counted else ""))
    for p in sorted(prompts, key=lambda p: (p["period"], p["composer"], p["instrumentation"])):
        print(f"{p['period']:<{widths[0]}}  {p['composer']:<{widths[1]}}  {p['instrumentation']:<{widths[2]}}"
              + (f"  {p['count']}" if counted else ""))
    return 0
