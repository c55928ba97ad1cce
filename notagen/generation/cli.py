"""`notagen generate` and `notagen prompts`.

Each piece gets a folder `OUTPUT/<name>/` with `<name>.raw.abc` (the model's text: prompt lines, `[r:]`, reduced
rests), `<name>.interleaved.abc` (full interleaved ABC), `<name>.abc` (standard ABC), `<name>.musicxml`, `.mid`,
`.svg` / `-N.svg` pages, `.png` pages, `.wav`, and `<name>.json` (prompt, seed, sampling, model, timings, validity,
attempts). `OUTPUT/manifest.json` lists the run. Every file is written atomically.

Continuation (`--continue-from`): the score (ABC, MusicXML, or MIDI quantised by music21) becomes rest-reduced
interleaved ABC, and its k body lines are numbered `[r:i/(k-1-i+R)]`: line i of the k given ones, with R lines
still to come, where R = `--max-bars` when set, else k (the model is told the piece goes on about as long again; it
then writes its own counters and may end earlier or later).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from notagen.errors import ConversionError, InputError, PromptError
from notagen.generation.sampling import SamplingSettings
from notagen.io import atomic_write_json, atomic_write_text, content_hash

OUTPUT_FORMATS = ("abc", "musicxml", "midi", "svg", "png", "wav")


# -- prompts --------------------------------------------------------------------------------------------------


def _norm(value: str) -> str:
    from notagen.abc.text import ascii_fold

    return " ".join(ascii_fold(value).split()).casefold()


def _label(prompt: dict) -> str:
    return f"{prompt['period']} / {prompt['composer']} / {prompt['instrumentation']}"


def resolve_prompt(period: str | None, composer: str | None, instrumentation: str | None,
                   registry: list[dict]) -> dict | None:
    """The registry entry the user's prompt names, None for unconditional generation.

    Fields left out match anything, as long as exactly one entry remains. An empty registry (a model without
    one) accepts a complete prompt unchecked. Raises PromptError listing the closest valid prompts.
    """
    given = {"period": period, "composer": composer, "instrumentation": instrumentation}
    if all(value is None for value in given.values()):
        return None
    if not registry:
        missing = [key for key, value in given.items() if value is None]
        if missing:
            raise PromptError(f"this model has no prompt registry: give all of --period, --composer and "
                              f"--instrumentation (missing {', '.join('--' + m for m in missing)})")
        return {key: " ".join(str(value).split()) for key, value in given.items()}
    matches = [entry for entry in registry
               if all(value is None or _norm(value) == _norm(entry[key]) for key, value in given.items())]
    if len(matches) == 1:
        return matches[0]
    wanted = " / ".join(given[key] or "*" for key in ("period", "composer", "instrumentation"))
    if len(matches) > 1:
        options = "; ".join(_label(entry) for entry in matches[:5])
        more = f" (+{len(matches) - 5} more)" if len(matches) > 5 else ""
        raise PromptError(f"prompt {wanted!r} is ambiguous: {options}{more}; give the missing field(s) "
                          f"(see `notagen prompts`)")
    labels = {_label(entry).casefold(): _label(entry) for entry in registry}
    query = " / ".join((given[key] or "") for key in ("period", "composer", "instrumentation")).casefold()
    close = [labels[key] for key in difflib.get_close_matches(query, list(labels), n=5, cutoff=0.0)]
    raise PromptError(f"unknown prompt {wanted!r} for this model; closest: {'; '.join(close)} "
                      f"(all {len(registry)}: `notagen prompts`)")


def prompt_context(prompt: dict | None) -> str:
    """The prompt lines fed to the model: `%period`, `%composer`, `%instrumentation` (the model writes `%end`)."""
    if prompt is None:
        return ""
    from notagen.abc.text import prompt_block

    block = prompt_block(prompt["period"], prompt["composer"], prompt["instrumentation"])
    return "".join(line + "\n" for line in block.split("\n")[:3])


# -- checkpoint and device ------------------------------------------------------------------------------------


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# -- continuation ---------------------------------------------------------------------------------------------


def continuation_text(path: Path, remaining: int | None = None) -> str:
    """A score file → rest-reduced interleaved ABC whose body lines carry `[r:i/j]` (see the module docstring)."""
    from notagen.abc.interleave import interleave
    from notagen.abc.text import split_header_body, strip_prompt_lines, strip_stream_annotations
    from notagen.convert import detect_format, score_to_abc

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if detect_format(path) == "midi":
        standard = _midi_to_abc(path)
    else:
        standard = score_to_abc(path)
    try:
        reduced = interleave(standard, reduce_rests=True)
    except (ValueError, IndexError, KeyError) as error:
        raise ConversionError(f"{path}: cannot interleave the voices ({error})") from error
    header, body = split_header_body(strip_stream_annotations(strip_prompt_lines(reduced)))
    header = [line for line in header if not line.startswith("X:")]
    if not body:
        raise InputError(f"{path}: no music to continue")
    count = len(body)
    rest = count if remaining is None else remaining
    lines = [f"[r:{i}/{count - 1 - i + rest}]{line}" for i, line in enumerate(body)]
    return "".join(line + "\n" for line in header + lines)


def _midi_to_abc(path: Path) -> str:
    import tempfile

    from music21 import converter
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    from notagen.convert import score_to_abc

    try:
        score = converter.parse(str(path), format="midi", quantizePost=True)
        xml = GeneralObjectExporter(score).parse()
    except Exception as error:  # music21 raises many unrelated types on odd MIDI files
        raise ConversionError(f"{path}: music21 cannot read the MIDI file ({type(error).__name__}: {error})") \
            from error
    with tempfile.TemporaryDirectory(prefix="notagen-midi-") as tmp:
        xml_path = Path(tmp) / (path.stem + ".musicxml")
        xml_path.write_bytes(xml)
        return score_to_abc(xml_path)


def with_prompt(prompt: dict | None, text: str) -> str:
    """Prompt lines first, then the text without its own prompt lines."""
    from notagen.abc.text import strip_prompt_lines

    return prompt_context(prompt) + strip_prompt_lines(text)


# -- writing --------------------------------------------------------------------------------------------------


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


def model_summary(loaded: Any, device: Any) -> dict:
    """What a manifest says about the model that wrote a piece."""
    return {"source": loaded.info.get("source"), "format": loaded.info.get("format"),
            "parameters": loaded.info.get("parameters"), "dtype": loaded.info.get("dtype"),
            "precision": loaded.info.get("precision"), "weight_bytes": loaded.info.get("weight_bytes"),
            "config": loaded.config.to_dict(), "device": str(device)}


def piece_name(index: int, result: Any) -> str:
    """Folder and file stem of the index-th piece: its number and the seed that wrote it."""
    return f"piece-{index + 1:03d}-seed{result.attempts[-1].seed}"


def piece_manifest(name: str, result: Any, requested_seed: int, sampling: Any, limits: Any, model_info: dict,
                   **extra: Any) -> dict:
    """The JSON manifest of one piece (prompt, seeds, sampling, limits, model, timings, validity, attempts).

    `extra` adds caller fields (prompt, continue_from, job) in front of the common ones.
    """
    piece = result.piece
    return {
        "name": name, **extra, "seed": result.attempts[-1].seed, "requested_seed": requested_seed,
        "sampling": sampling.to_dict(), "limits": asdict(limits), "model": model_info,
        "stop_reason": piece.stop_reason, "bars": piece.bars, "patches": piece.patches,
        "rewindows": piece.rewindows, "chars": len(piece.generated),
        "timings": {"generate_seconds": round(piece.seconds, 3),
                    "chars_per_second": round(piece.chars_per_second, 1),
                    "all_attempts_seconds": round(sum(a.seconds for a in result.attempts), 3)},
        "valid": result.finished.valid, "error": result.finished.error,
        "validity": result.finished.validity, "retries": result.retries,
        "attempts": [attempt.to_dict() for attempt in result.attempts],
        "hash": content_hash(result.finished.raw),
    }


def write_piece(directory: Path, name: str, result: Any, formats: list[str], manifest: dict) -> dict:
    """Write one piece's folder and return its manifest (with the file list).

    Everything is written into a hidden `.NAME.partial` folder that is renamed to NAME at the end, so a piece's
    folder either exists complete or not at all (an older folder of the same name is replaced).
    """
    from notagen.render import render_score

    final = directory / name
    folder = directory / f".{name}.partial"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    finished = result.finished
    files: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    if "abc" in formats:
        files["raw_abc"] = [atomic_write_text(folder / f"{name}.raw.abc", finished.raw)]
        if finished.interleaved:
            files["interleaved_abc"] = [atomic_write_text(folder / f"{name}.interleaved.abc", finished.interleaved)]
        if finished.standard:
            files["abc"] = [atomic_write_text(folder / f"{name}.abc", finished.standard)]
    render_formats = [fmt for fmt in ("svg", "png", "midi", "wav") if fmt in formats]
    if finished.musicxml is None:
        for fmt in ["musicxml", *render_formats]:
            if fmt in formats:
                skipped[fmt] = f"no MusicXML: {finished.error or 'the ABC does not convert'}"
    else:
        if "musicxml" in formats:
            files["musicxml"] = [atomic_write_text(folder / f"{name}.musicxml", finished.musicxml)]
        if render_formats:
            try:
                rendered = render_score(finished.musicxml, folder, name, render_formats)
            except ConversionError as error:
                skipped.update({fmt: str(error) for fmt in render_formats})
            else:
                files.update(rendered.files)
                skipped.update(rendered.skipped)
                manifest["midi_programs"] = rendered.programs
    manifest["timings"]["render_seconds"] = round(time.perf_counter() - started, 3)
    manifest["files"] = {key: [f"{name}/{path.name}" for path in paths] for key, paths in files.items()}
    manifest["skipped"] = skipped
    atomic_write_json(folder / f"{name}.json", manifest)
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    return manifest


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
        formats: Files to write per piece, any of abc musicxml midi svg png wav (default: all; the JSON
            manifest is always written).
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
    from notagen.generation.engine import GenerationEngine, GenerationLimits, PieceRequest
    from notagen.generation.postprocess import generate_checked

    if n < 1:
        raise InputError(f"-n must be at least 1, got {n}")
    formats = list(OUTPUT_FORMATS) if not formats else formats
    unknown = sorted(set(formats) - set(OUTPUT_FORMATS))
    if unknown:
        raise InputError(f"unknown --formats {', '.join(unknown)}; choose from {', '.join(OUTPUT_FORMATS)}")
    if max_bars is not None and max_bars < 1:
        raise InputError(f"--max-bars must be at least 1, got {max_bars}")
    sampling = SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p, order=sampling_order,
                                strict=strict)
    limits = GenerationLimits(max_bars=max_bars, max_seconds=max_seconds)
    from notagen import weights

    loaded = weights.open_checkpoint(checkpoint, device=pick_device(device), precision=precision)
    prompt = resolve_prompt(period, composer, instrumentation, loaded.prompts)
    if prompt is not None and not loaded.prompts:
        print("notagen: warning: this model has no prompt registry; the prompt is used unchecked", file=sys.stderr)
    context = prompt_context(prompt)
    if continue_from is not None:
        context = with_prompt(prompt, continuation_text(continue_from, remaining=max_bars))
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
                                  prompt=prompt, continue_from=str(continue_from) if continue_from else None)
        manifest = write_piece(output, name, result, list(formats), manifest)
        summary.append({"name": name, "valid": manifest["valid"], "stop_reason": piece.stop_reason,
                        "bars": piece.bars, "retries": result.retries, "files": manifest["files"]})
        status = "valid" if manifest["valid"] else f"INVALID ({manifest['error']})"
        print(f"{output / name}: {piece.bars} bars, {piece.stop_reason}, {status}"
              + (f", skipped {', '.join(sorted(manifest['skipped']))}" if manifest["skipped"] else ""))
        for fmt, reason in manifest["skipped"].items():
            if fmt in ("wav", "png"):
                print(f"notagen: warning: {name}: no {fmt}: {reason}", file=sys.stderr)
    atomic_write_json(output / "manifest.json", {"pieces": summary, "prompt": prompt, "n": n, "seed": seed,
                                                 "sampling": sampling.to_dict(), "model": model_info,
                                                 "seconds": round(time.perf_counter() - started, 3)})
    valid = sum(item["valid"] for item in summary)
    print(f"{valid}/{n} valid pieces in {output} ({time.perf_counter() - started:.1f} s)")
    return 0


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
