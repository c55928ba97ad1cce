"""The one way every command opens a model: name or path → local file → converted copy → model at a precision.

`open_checkpoint(spec, device, precision)` is used by generate, prompts, serve, eval (perplexity), train and dpo:

1. **Resolve** `spec`: None → the bundled model; an existing local path → itself; `hf:…` or an official alias
   (`notagen-x`, `large`, …) → the file in the Hugging Face cache, downloaded if needed (`notagen.hub`).
2. **Convert once.** An official `.pth` (a pickle whose GPT-2 `Conv1D` weights must be transposed), or a native
   directory asked for at another precision, is converted to a native directory at that precision under the
   user's cache (`cache_dir()`: $NOTAGEN_CACHE_DIR, else $XDG_CACHE_HOME/notagen, else ~/.cache/notagen), keyed by
   the source's path, size and modification time. Later starts load that directory directly.
3. **Load** it memory-mapped (float weights are the file's pages; int8 layers are packed one at a time), so the
   process holds one copy of the weights at the chosen precision.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from notagen.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    default_checkpoint_path,
    load_checkpoint,
    load_official_state_dict,
    native_state_dict,
    read_native_config,
    write_checkpoint,
)
from notagen.errors import CheckpointError
from notagen.hub import OFFICIAL, HubFile, describe, download, official_file, parse_name, prompts_for
from notagen.precision import FLOAT_DTYPES, Precision, bf16_is_native, check_precision, int8_state_dict

CACHE_VERSION = 1  # bump when the converted layout changes, so old copies are not reused


def cache_dir() -> Path:
    """Where converted copies live (read at call time)."""
    if os.environ.get("NOTAGEN_CACHE_DIR"):
        return Path(os.environ["NOTAGEN_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "notagen"


def resolve(spec: str | Path | None) -> Path:
    """The local file or directory a checkpoint spec names (downloading official weights when needed)."""
    if spec is None or str(spec) == "":
        path = default_checkpoint_path()
        if path is None:
            raise CheckpointError("no model: pass --checkpoint DIR|FILE.pth|NAME (a directory written by `notagen "
                                  f"train`, official NotaGen weights, or one of: {describe()})")
        return path
    hub_file = _hub_name(spec)
    if hub_file is not None:
        return download(hub_file)
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (a directory, a .pth file, hf:OWNER/REPO/FILE, or "
                              f"an official name: {', '.join(OFFICIAL)})")
    if path.is_file() and (path.name == CONFIG_FILE or path.suffix == ".safetensors"):
        path = path.parent
    return path


def _hub_name(spec: str | Path) -> HubFile | None:
    """The hub file `spec` names; None for a local path (an existing file or folder wins over an alias)."""
    text = str(spec)
    if not text.startswith("hf:") and Path(text).expanduser().exists():
        return None
    return parse_name(text)


def _stored_precision(path: Path) -> str | None:
    """fp32/bf16/int8 of a native directory as stored (None: an official .pth, or float16 and the like)."""
    if not path.is_dir():
        return None
    _, _, _, precision = read_native_config(path)
    if precision == "int8":
        return "int8"
    from safetensors import safe_open

    with safe_open(str(path / WEIGHTS_FILE), framework="pt") as handle:
        dtype = handle.get_slice(next(iter(handle.keys()))).get_dtype()
    return {"F32": "fp32", "BF16": "bf16"}.get(dtype)


def converted_path(source: Path, precision: str) -> Path:
    """The cache directory of `source` converted to `precision` (it may not exist yet)."""
    target = source / WEIGHTS_FILE if source.is_dir() else source
    stat = target.stat()
    identity = f"{CACHE_VERSION}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{source.stem[:48]}-{digest}" / precision


def convert(source: Path, precision: Precision, target: Path) -> Path:
    """Write `source` (official .pth or native directory) at `precision` as a native directory `target`."""
    started = time.perf_counter()
    print(f"notagen: converting {source.name} to {precision} once (later starts load the copy)", file=sys.stderr,
          flush=True)
    if source.is_dir():
        loaded = load_checkpoint(source)
        if loaded.info["precision"] == "int8":
            raise CheckpointError(f"{source}: holds int8 weights; convert from the float checkpoint instead")
        state = native_state_dict(loaded.model)
        config, prompts, training = loaded.config, loaded.prompts, dict(loaded.info.get("training", {}))
        del loaded
    else:
        state, config = load_official_state_dict(source)
        prompts, training = prompts_for(source), {}
        official = official_file(source)
        if official is not None:
            training["official"] = official.alias
    training["converted_from"] = {"source": str(source), "precision": precision}
    if precision == "int8":
        state, stored = int8_state_dict(state), "int8"
    else:
        state, stored = {key: t.to(FLOAT_DTYPES[precision]) for key, t in state.items()}, None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            write_checkpoint(scratch, state, config, prompts, training, stored)
            del state
            try:
                os.rename(scratch, target)
            except OSError:  # another process finished the same conversion first: keep theirs
                if not (target / CONFIG_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except OSError as error:
        raise CheckpointError(f"cannot write the converted copy under {target.parent} ({error.strerror or error}; "
                              f"set NOTAGEN_CACHE_DIR to a folder with room)") from error
    print(f"notagen: converted {source.name} to {precision} in {time.perf_counter() - started:.1f} s "
          f"(cached in {target})", file=sys.stderr)
    return target


def pick_device(device: str) -> str:
    """`auto` → cuda when a GPU is there, else mps (Apple), else cpu; any other choice as given."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def open_checkpoint(spec: str | Path | None, device: str | torch.device = "cpu",
                    precision: Precision = "fp32") -> Checkpoint:
    """Load the model `spec` names at `precision` on `device` (see the module docstring)."""
    precision = check_precision(precision, device)
    source = resolve(spec)
    if precision == "bf16" and torch.device(device).type == "cpu" and not bf16_is_native():
        print("notagen: warning: this CPU has no native bfloat16 arithmetic; bf16 will be slower than fp32 "
              "(int8 is the fast low-memory choice here)", file=sys.stderr)
    path = source
    if _stored_precision(source) != precision:
        path = converted_path(source, precision)
        if not (path / CONFIG_FILE).is_file():
            convert(source, precision, path)
    checkpoint = load_checkpoint(path, device=device)
    checkpoint.info.update({"spec": str(spec) if spec is not None else None, "source": str(source),
                            "loaded_from": str(path)})
    if checkpoint.info["format"] == "native" and not source.is_dir():
        checkpoint.info["format"] = "official"
    return checkpoint


def prompts_of(spec: str | Path | None) -> tuple[str, list[dict]]:
    """(what was resolved, its prompt registry) without loading weights where the registry is known otherwise."""
    hub_file = _hub_name(spec) if spec is not None else None
    if hub_file is not None and hub_file.official is not None:
        return f"{hub_file.repo}/{hub_file.filename}", prompts_for(hub_file.filename)
    source = resolve(spec)
    if source.is_dir():
        _, prompts, _, _ = read_native_config(source)
        return str(source), prompts
    return str(source), prompts_for(source)  # an official file's registry goes by its released name


__all__ = ["cache_dir", "convert", "converted_path", "open_checkpoint", "prompts_of", "resolve"]
