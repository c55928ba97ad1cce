"""Checkpoints: our native format and the official NotaGen `.pth` files.

* **Native**: a directory with `model.safetensors` (our `nn.Linear` layout; the character LM head is tied to the
  character embedding, so it is stored once and re-tied on load) and `config.json`
  `{"format": "notagen", "version": 1, "model": {...}, "prompts": [...], "training": {...}}`, plus
  `"precision": "int8"` for a directory whose block Linear weights are stored as int8 with per-channel scales
  (`notagen.precision`). Weights are memory-mapped, not copied: a float model's parameters are the file's pages.
* **Official**: a `torch.save`d dict holding `{'model': state_dict}` (plus optimizer state etc. that we ignore) in
  GPT-2's `Conv1D` layout ([in, out] weights for `c_attn`, `c_proj`, `c_fc`). The architecture is inferred from the
  tensor shapes, never from the file name. The fine-tuned official files (known by their released names,
  `notagen.hub`) come with the official prompt registry.

Every loaded state dict is checked key by key and shape by shape before it reaches the model, so a wrong or corrupt
file fails with one `CheckpointError` line saying what is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pickle
import re
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from notagen.config import VOCAB_SIZE, ModelConfig
from notagen.errors import CheckpointError, ConfigError
from notagen.hub import prompts_for
from notagen.io import atomic_path, atomic_write_json
from notagen.model import NotaGenModel
from notagen.precision import (
    SCALE_SUFFIX,
    install_int8,
    is_quantised_key,
    model_precision,
    release_freed_memory,
    weight_bytes,
)

FORMAT_NAME = "notagen"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models" / "notagen-mini"

WTE_KEY = "char_level_decoder.base.transformer.wte.weight"
LM_HEAD_KEY = "char_level_decoder.base.lm_head.weight"
PATCH_EMBEDDING_KEY = "patch_level_decoder.patch_embedding.weight"
PATCH_WPE_KEY = "patch_level_decoder.base.wpe.weight"
PATCH_BLOCK_PREFIX = "patch_level_decoder.base.h."
CHAR_BLOCK_PREFIX = "char_level_decoder.base.transformer.h."
# GPT-2 Conv1D weights, stored [in, out]; our nn.Linear holds [out, in].
CONV1D_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
# Buffers some transformers versions save next to the weights; they carry no learned values.
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".position_ids")
CONFIG_KEYS = {"format", "version", "model", "prompts", "training", "precision"}
PROMPT_KEYS = {"period", "composer", "instrumentation", "count"}
SHOWN = 4  # keys/shapes named in an error message before "+N more"
_NUMPY_GLOBAL = re.compile(r"numpy\.(_core|core)\.multiarray\.scalar|numpy\.dtype|numpy\.dtypes\.\w+DType")


@dataclass
class Checkpoint:
    """A loaded model with its configuration, prompt registry and provenance."""

    model: NotaGenModel
    config: ModelConfig
    prompts: list[dict] = field(default_factory=list)
    """Prompt registry: [{"period", "composer", "instrumentation", "count"}]; [] when the file has none."""
    info: dict = field(default_factory=dict)
    """Provenance: {"format": "native" | "official", "source": str, "training": {...}, ...}."""


# -- layout ---------------------------------------------------------------------------------------------------


def is_conv1d_weight(key: str) -> bool:
    return key.endswith(CONV1D_SUFFIXES)


def _meta_model(config: ModelConfig) -> NotaGenModel:
    """The model's structure without memory or initialisation cost (parameters on the meta device)."""
    with torch.device("meta"):
        return NotaGenModel(config)


def native_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of a native state dict (lm_head excluded: it is the tied character embedding)."""
    shapes = {key: tuple(t.shape) for key, t in _meta_model(config).state_dict().items()}
    shapes.pop(LM_HEAD_KEY, None)
    return shapes


def official_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of an official NotaGen state dict (Conv1D weights transposed, lm_head included)."""
    shapes = {key: (shape[::-1] if is_conv1d_weight(key) else shape) for key, shape in native_shapes(config).items()}
    shapes[LM_HEAD_KEY] = shapes[WTE_KEY]
    return shapes


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def layout_problems(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]],
                    extra_unexpected: Iterable[str] = ()) -> list[str]:
    """What keeps a state dict from matching an expected {key: shape} layout, as short phrases (none: it fits).

    Shared by the NotaGen and the encoder loaders so both name missing, unexpected and mis-shaped keys alike.
    """
    present = set(state)
    missing = sorted(set(expected) - present)
    unexpected = sorted((present - set(expected)) | set(extra_unexpected))
    mismatched = [f"{key} {list(state[key].shape)} != {list(shape)}" for key, shape in expected.items()
                  if key in state and tuple(state[key].shape) != tuple(shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_listing(mismatched)}")
    return problems


def check_state_dict(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raise one CheckpointError line naming missing/unexpected keys and mismatched shapes, if any."""
    problems = layout_problems(state, expected)
    if problems:
        raise CheckpointError(f"{source}: does not match the NotaGen layout; " + "; ".join(problems))


def _count_layers(keys: list[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = [int(m.group(1)) for key in keys if (m := pattern.match(key))]
    return max(indices) + 1 if indices else 0


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"unknown floating-point dtype {dtype!r}")
    return resolved


def build_model(config: ModelConfig, state: Mapping[str, Tensor], device: str | torch.device = "cpu",
                dtype: torch.dtype | str | None = None) -> NotaGenModel:
    """A model holding exactly `state` (native layout, already checked), without a random initialisation pass.

    Tensors already on `device` in `dtype` become the parameters themselves (no copy), so an mmap-loaded file is
    paged in lazily; the caller should not reuse `state` afterwards.
    """
    dtype = _resolve_dtype(dtype)
    if dtype is None:  # one dtype for the whole model: that of the stored patch embedding
        dtype = state[PATCH_EMBEDDING_KEY].dtype
    state = {key: tensor.to(device=device, dtype=dtype) for key, tensor in state.items()}
    state[LM_HEAD_KEY] = state[WTE_KEY]
    model = _meta_model(config)
    model.load_state_dict(state, strict=True, assign=True)
    head = model.char_level_decoder.base
    head.lm_head.weight = head.transformer.wte.weight  # assign=True replaced both Parameters: tie them again
    return model


def native_state_dict(model: NotaGenModel) -> dict[str, Tensor]:
    """The model's tensors in our layout, lm_head left out (it is the tied character embedding)."""
    state = {key: tensor.detach() for key, tensor in model.state_dict().items()}
    state.pop(LM_HEAD_KEY, None)
    return state


# -- official .pth --------------------------------------------------------------------------------------------


def _short_reason(error: BaseException) -> str:
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(error).__name__}: {line[:120]}" if line else type(error).__name__


def _numpy_scalar_globals(path: Path) -> list[Any] | None:
    """The globals a zip checkpoint needs beyond plain tensors, if they are only NumPy scalars and dtypes.

    Training scripts often store counters such as `min_eval_loss` as NumPy scalars; those are safe to allow,
    anything else stays refused by the weights-only reader.
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile, pickle.UnpicklingError):
        return None
    if not names or not all(_NUMPY_GLOBAL.fullmatch(name) for name in names):
        return None
    try:
        allowed = [getattr(importlib.import_module(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]) for name in names]
        import numpy

        # dtype classes (numpy.dtypes.Float64DType …) are built while unpickling and not listed beforehand
        return allowed + [type(numpy.dtype(code)) for code in numpy.typecodes["All"]]
    except (ImportError, AttributeError, TypeError):
        return None


def _torch_load(path: Path) -> Any:
    # mmap only works for the zip format; legacy (and broken) files go through the plain reader.
    mmap = zipfile.is_zipfile(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            allowed = _numpy_scalar_globals(path) if mmap else None
            if allowed is None:
                raise
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError, zipfile.BadZipFile,
            AttributeError, KeyError, ImportError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_short_reason(error)})") from error


def _scalar_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The training counters an official file may carry next to its weights (epoch, best_epoch, min_eval_loss)."""
    info: dict[str, Any] = {}
    for key in ("epoch", "best_epoch", "min_eval_loss"):
        value = obj.get(key)
        if (isinstance(value, Tensor) and value.numel() == 1) or (
                type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0):
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            info[key] = value
    return info


def _official_from_object(obj: Any, source: str) -> tuple[dict[str, Tensor], ModelConfig]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: not a checkpoint (holds a {type(obj).__name__}, not a dict of tensors)")
    state = obj["model"] if "model" in obj else obj
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{source}: not a checkpoint ('model' is not a state dict)")
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if len(tensors) != len(state):
        odd = sorted(key for key in state if key not in tensors)
        raise CheckpointError(f"{source}: not a state dict of tensors (non-tensor entries: {_listing(odd)})")
    if tensors and all(key.startswith("module.") for key in tensors):  # saved from a DDP wrapper
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    tensors = {key: value for key, value in tensors.items() if not key.endswith(BUFFER_SUFFIXES)}

    embedding, wpe = tensors.get(PATCH_EMBEDDING_KEY), tensors.get(PATCH_WPE_KEY)
    if embedding is None or wpe is None or embedding.dim() != 2 or wpe.dim() != 2:
        sample = _listing(sorted(tensors)) or "none"
        raise CheckpointError(f"{source}: not a NotaGen checkpoint (no patch-level decoder weights; keys: {sample})")
    hidden, inputs = embedding.shape
    if inputs % VOCAB_SIZE:
        raise CheckpointError(f"{source}: patch embedding has {inputs} inputs, not a multiple of {VOCAB_SIZE}")
    keys = list(tensors)
    try:
        config = ModelConfig(patch_size=inputs // VOCAB_SIZE, patch_length=wpe.shape[0],
                             patch_layers=_count_layers(keys, PATCH_BLOCK_PREFIX),
                             char_layers=_count_layers(keys, CHAR_BLOCK_PREFIX), hidden_size=hidden)
    except ConfigError as error:
        raise CheckpointError(f"{source}: inconsistent NotaGen checkpoint ({error})") from error

    # The reference ties lm_head to the char embedding; files may hold either key or both.
    if LM_HEAD_KEY in tensors and WTE_KEY in tensors:
        head, wte = tensors[LM_HEAD_KEY], tensors[WTE_KEY]
        if head.shape == wte.shape and not torch.equal(head, wte):
            raise CheckpointError(f"{source}: {LM_HEAD_KEY} differs from {WTE_KEY}, but the model ties them")
    elif LM_HEAD_KEY in tensors:
        tensors[WTE_KEY] = tensors[LM_HEAD_KEY]
    elif WTE_KEY in tensors:
        tensors[LM_HEAD_KEY] = tensors[WTE_KEY]
    check_state_dict(tensors, official_shapes(config), source)

    tensors.pop(LM_HEAD_KEY)
    native = {key: (value.t().contiguous() if is_conv1d_weight(key) else value) for key, value in tensors.items()}
    return native, config


def load_official_state_dict(path: str | Path) -> tuple[dict[str, Tensor], ModelConfig]:
    """Read an official NotaGen `.pth` into our layout (lm_head left out) and infer its configuration."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    state, config = _official_from_object(_torch_load(path), str(path))
    return state, config


def official_state_dict(model: NotaGenModel) -> dict[str, Tensor]:
    """The model's tensors in the official layout (Conv1D weights [in, out], both wte and lm_head keys)."""
    config = model.config
    if config.heads != max(1, config.hidden_size // 64):
        raise CheckpointError(f"cannot export a model with {config.heads} heads to the official format: "
                              f"the NotaGen code always uses hidden_size // 64 = {config.hidden_size // 64}")
    state = {key: tensor.detach().cpu() for key, tensor in native_state_dict(model).items()}
    state = {key: (value.t().contiguous() if is_conv1d_weight(key) else value) for key, value in state.items()}
    state[LM_HEAD_KEY] = state[WTE_KEY]  # one storage, saved once, loads into the tied pair
    return state


def export_official(model: NotaGenModel, path: str | Path) -> Path:
    """Write `{'model': state_dict}` in the official layout, loadable by the reference code (strict)."""
    state = official_state_dict(model)
    with atomic_path(path) as tmp:
        torch.save({"model": state}, tmp)
    return Path(path)


# -- native ---------------------------------------------------------------------------------------------------


def _check_prompts(prompts: Any, source: str) -> list[dict]:
    if not isinstance(prompts, list):
        raise CheckpointError(f"{source}: 'prompts' must be a list")
    for index, prompt in enumerate(prompts):
        ok = (isinstance(prompt, dict) and set(prompt) == PROMPT_KEYS
              and all(isinstance(prompt[k], str) for k in ("period", "composer", "instrumentation"))
              and isinstance(prompt["count"], int) and not isinstance(prompt["count"], bool))
        if not ok:
            raise CheckpointError(f"{source}: prompt {index} must be {{period, composer, instrumentation: str, "
                                  f"count: int}}, got {prompt!r}")
    return [dict(prompt) for prompt in prompts]


def read_native_config(directory: Path) -> tuple[ModelConfig, list[dict], dict, str | None]:
    """(model config, prompts, training provenance, "int8" or None for float weights) of a native checkpoint
    directory, strictly validated."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE} (not a notagen checkpoint directory)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({_short_reason(error)})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a notagen checkpoint config (\"format\" must be {FORMAT_NAME!r})")
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {data.get('version')!r} "
                              f"(this notagen reads version {FORMAT_VERSION})")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown keys {', '.join(unknown)}")
    if not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: 'model' must be an object of model settings")
    try:
        config = ModelConfig.from_dict(data["model"])
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: bad model settings ({error})") from error
    training = data.get("training", {})
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: 'training' must be an object")
    precision = data.get("precision")
    if precision not in (None, "int8"):
        raise CheckpointError(f"{path}: 'precision' must be \"int8\" or absent (float weights), got {precision!r}")
    return config, _check_prompts(data.get("prompts", []), str(path)), training, precision


def write_checkpoint(directory: str | Path, state: Mapping[str, Tensor], config: ModelConfig,
                     prompts: list[dict] | None = None, training: dict | None = None,
                     precision: str | None = None) -> Path:
    """Write a native checkpoint directory from a native state dict (weights first, then config.json; each file
    atomically). `precision` "int8": `state` holds int8 block weights with their scales (`notagen.precision`)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: exists and is not a directory")
    prompts = _check_prompts(list(prompts or []), str(directory))
    config_data = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": config.to_dict(),
                   "prompts": prompts, "training": dict(training or {})}
    if precision is not None:
        config_data["precision"] = precision
    json.dumps(config_data)  # fail before touching the directory if the provenance is not JSON
    state = {key: tensor.cpu().contiguous() for key, tensor in state.items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_FILE, config_data)
    return directory


def save_checkpoint(directory: str | Path, model: NotaGenModel, prompts: list[dict] | None = None,
                    training: dict | None = None) -> Path:
    """Write a native checkpoint directory of a float model."""
    return write_checkpoint(directory, native_state_dict(model), model.config, prompts, training)


def int8_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of an int8 native state dict: the float layout plus a [out] scale per quantised weight."""
    shapes = native_shapes(config)
    for key, shape in list(shapes.items()):
        if key.endswith(".weight") and is_quantised_key(key):
            shapes[key[: -len(".weight")] + SCALE_SUFFIX] = (shape[0],)
    return shapes


def _open_safetensors(weights: Path, backend: str):
    try:
        return safe_open(str(weights), framework="pt", device="cpu", backend=backend)
    except TypeError:  # safetensors < 0.8 has one (mmap) reader
        return safe_open(str(weights), framework="pt", device="cpu")


def _load_int8(directory: Path, weights: Path, config: ModelConfig, device: str | torch.device) -> NotaGenModel:
    """Build an int8 model: float tensors memory-mapped; each int8 layer read with pread, packed, and released, so
    the process never holds the file's int8 bytes next to the packed copy."""
    if torch.device(device).type != "cpu":
        raise CheckpointError(f"{directory}: int8 weights run on the CPU only, not on {device}")
    with _open_safetensors(weights, "mmap") as handle:
        keys = list(handle.keys())
        shapes = {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in keys}
        floats = {key: handle.get_tensor(key) for key in keys if not is_quantised_key(key)}
    check_state_dict(shapes, int8_shapes(config), str(weights))
    model = _meta_model(config)
    with _open_safetensors(weights, "pread") as handle:
        def read(key: str) -> Tensor:
            tensor = handle.get_tensor(key)
            if key.endswith(".weight") and tensor.dtype != torch.int8:
                raise CheckpointError(f"{weights}: {key} is {tensor.dtype}, an int8 checkpoint stores int8")
            return tensor
        install_int8(model, read)
    for key, tensor in floats.items():  # the float parameters (shapes checked above), without a copy
        owner, _, name = key.rpartition(".")
        setattr(model.get_submodule(owner), name, nn.Parameter(tensor.float(), requires_grad=False))
    head = model.char_level_decoder.base
    head.lm_head.weight = head.transformer.wte.weight
    release_freed_memory()  # the per-layer read and pack buffers
    return model


def _load_native(directory: Path, device: str | torch.device, dtype: torch.dtype | str | None) -> Checkpoint:
    config, prompts, training, precision = read_native_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    try:
        if precision == "int8":
            model = _load_int8(directory, weights, config, device)
        else:
            state = load_file(str(weights), device="cpu")  # memory-mapped: no copy unless dtype/device differ
            check_state_dict(state, native_shapes(config), str(weights))
            model = build_model(config, state, device, dtype)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights}: unreadable ({_short_reason(error)})") from error
    info = {"format": "native", "source": str(directory), "training": training}
    return Checkpoint(model=model, config=config, prompts=prompts, info=info)


# -- entry points ---------------------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None) -> Checkpoint:
    """Load a native directory (or its config.json / model.safetensors) or an official NotaGen `.pth` file.

    `dtype` None keeps the stored precision. The model is returned in eval mode.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file() and (path.name == CONFIG_FILE or path.suffix == ".safetensors"):
        path = path.parent
    if path.is_dir():
        checkpoint = _load_native(path, device, dtype)
    else:
        obj = _torch_load(path)
        state, config = _official_from_object(obj, str(path))
        info = {"format": "official", "source": str(path), "training": _scalar_metadata(obj)}
        checkpoint = Checkpoint(model=build_model(config, state, device, dtype), config=config,
                                prompts=prompts_for(path), info=info)
    model = checkpoint.model.eval()
    checkpoint.info["parameters"] = checkpoint.config.num_parameters()
    checkpoint.info["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    checkpoint.info["precision"] = model_precision(model)
    checkpoint.info["weight_bytes"] = weight_bytes(model)
    return checkpoint


def default_checkpoint_path() -> Path | None:
    """The bundled model directory (notagen/models/notagen-mini) if its weights are installed, else None."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / WEIGHTS_FILE).is_file() else None


def _with_patch_length(checkpoint: Checkpoint, patch_length: int) -> NotaGenModel:
    config = checkpoint.config
    if not 1 <= patch_length <= config.patch_length:
        raise CheckpointError(f"--patch-length must be between 1 and the checkpoint's {config.patch_length} "
                              f"(learned positions cannot be extended), got {patch_length}")
    state = native_state_dict(checkpoint.model)
    state[PATCH_WPE_KEY] = state[PATCH_WPE_KEY][:patch_length].clone()
    new_config = dataclasses.replace(config, patch_length=patch_length)
    return build_model(new_config, state, device=state[PATCH_WPE_KEY].device)


def convert_checkpoint_command(source: str, output: Path, to: Literal["native", "official"] = "native",
                               patch_length: int | None = None) -> int:
    """Convert a checkpoint between the native format and an official NotaGen .pth file.

    The source may be either format (an official file's architecture is read from its tensor shapes). Native
    output is a directory (model.safetensors + config.json), official output a single .pth file that the NotaGen
    code loads strictly.

    Args:
        source: native checkpoint directory, official NotaGen .pth file, hf:OWNER/REPO/FILE or an official name
            (notagen-x, large, …).
        output: directory (native) or file (official) to write.
        to: output format.
        patch_length: keep only the first N learned patch positions (a shorter context window; cannot exceed
            the source's).

    Examples:
        notagen convert-checkpoint weights_notagenx_p_size_16_p_length_1024_p_layers_20_h_size_1280.pth models/x
        notagen convert-checkpoint models/x x.pth --to official
        notagen convert-checkpoint notagen-x models/notagen-x
    """
    from notagen.weights import resolve

    started = time.perf_counter()
    path = resolve(source)
    if Path(output).resolve() == path.resolve():
        raise CheckpointError(f"output {output} is the source itself")
    checkpoint = load_checkpoint(path)
    model = checkpoint.model
    if patch_length is not None:
        model = _with_patch_length(checkpoint, patch_length)
    if to == "native":
        training = dict(checkpoint.info.get("training", {}))
        training["converted_from"] = {"source": str(source), "format": checkpoint.info["format"]}
        save_checkpoint(output, model, checkpoint.prompts, training)
    else:
        if Path(output).is_dir():
            raise CheckpointError(f"{output}: is a directory; official output is a single .pth file")
        export_official(model, output)
    config = model.config
    print(f"wrote {output} ({to}; {model.num_parameters() / 1e6:.1f} M parameters, hidden {config.hidden_size}, "
          f"{config.patch_layers}+{config.char_layers} layers, {config.patch_length} patches) "
          f"in {time.perf_counter() - started:.1f} s")
    return 0
