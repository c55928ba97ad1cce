"""Load encoders: official CLaMP 2 / CLaMP 3 / M3 `.pth` files and our own directories.

Official files are `torch.save({'model': state_dict, ...})`; they are read with `weights_only=True` (no code runs),
their BERT / GPT-2 names are mapped onto `M3Model`, the sizes are read from the tensor shapes, and the result is
checked strictly: any missing, unexpected or mis-shaped tensor gives one `CheckpointError` line naming them.
Layouts: CLaMP 2 `music_model.*` + `music_proj.*` (text tower skipped), CLaMP 3 `symbolic_model.*` +
`symbolic_proj.*`, M3 `encoder.*` (+ `decoder.*`). Our own format is a directory with `model.safetensors` and
`config.json`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from notagen.checkpoint import layout_problems
from notagen.encoder.features import FeatureExtractor
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.encoder.patchilizer import VOCAB_SIZE
from notagen.errors import CheckpointError, ConfigError
from notagen.io import atomic_write_bytes, atomic_write_json

FORMAT = "notagen-encoder"
DEFAULT_ENCODER_DIR = Path(__file__).resolve().parent.parent / "models" / "encoder"

# Tensors the official files carry that our module does not need.
_IGNORED = re.compile(
    r"(^|\.)(position_ids|token_type_ids|attn\.bias|attn\.masked_bias)$"
    r"|\.base\.embeddings\.word_embeddings\.weight$|\.base\.pooler\.dense\.(weight|bias)$"
    r"|^decoder\.base\.lm_head\.weight$"
)
_OTHER_TOWERS = ("text_model.", "text_proj.", "audio_model.", "audio_proj.")
_BERT_LAYER = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_GPT2_LAYER = ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# Decoder block names of encoder directories written before the decoder used `notagen.model.Block`.
_LEGACY_DECODER = re.compile(r"^(decoder\.blocks\.\d+\.)(c_attn|c_proj|c_fc|mlp_proj)\.")
_LEGACY_NAMES = {"c_attn": "attn.c_attn", "c_proj": "attn.c_proj", "c_fc": "mlp.c_fc", "mlp_proj": "mlp.c_proj"}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@dataclass
class LoadedEncoder:
    """A model ready for features, with what every report must name."""

    model: M3Model
    kind: str  # "clamp2" | "clamp3" | "m3" | "notagen"
    mode: str  # feature mode: "clamp2" (projected) or "m3" (pooled)
    name: str
    weights_id: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    def extractor(self, batch_size: int = 8, device: str = "cpu") -> FeatureExtractor:
        return FeatureExtractor(self.model, mode=self.mode, name=self.name,  # type: ignore[arg-type]
                                weights_id=self.weights_id, batch_size=batch_size, device=device,
                                strip_default_length=self.kind == "clamp3")


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _layer_count(keys: list[str], pattern: str) -> int:
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _read_official(path: Path) -> dict[str, Any]:
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint ({first[:160]})") from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        return checkpoint
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return {"model": checkpoint}
    raise CheckpointError(f"{path}: no 'model' state dict in the checkpoint")


def _detect(state: dict[str, Tensor], path: Path) -> tuple[str, str, str | None]:
    """(kind, tower prefix, projection prefix)."""
    if "music_model.patch_embedding.weight" in state:
        return "clamp2", "music_model.", "music_proj."
    if "symbolic_model.patch_embedding.weight" in state:
        return "clamp3", "symbolic_model.", "symbolic_proj."
    if "encoder.patch_embedding.weight" in state:
        return "m3", "encoder.", None
    raise CheckpointError(f"{path}: not a CLaMP 2, CLaMP 3 or M3 checkpoint (no music_model / symbolic_model / "
                          f"encoder patch_embedding among {len(state)} tensors)")


def _infer_config(state: dict[str, Tensor], prefix: str, has_proj: bool, num_heads: int | None) -> EncoderConfig:
    keys = list(state)
    weight = state[prefix + "patch_embedding.weight"]
    hidden, width = weight.shape
    position = state.get(prefix + "base.embeddings.position_embeddings.weight")
    types = state.get(prefix + "base.embeddings.token_type_embeddings.weight")
    ffn = state.get(prefix + "base.encoder.layer.0.intermediate.dense.weight")
    heads = num_heads or max(1, hidden // 64)
    dec_layers = _layer_count(keys, r"^decoder\.base\.transformer\.h\.(\d+)\.")
    try:
        return EncoderConfig(
            hidden_size=hidden, num_layers=_layer_count(keys, re.escape(prefix) + r"base\.encoder\.layer\.(\d+)\."),
            num_heads=heads, intermediate_size=ffn.shape[0] if ffn is not None else 4 * hidden,
            patch_size=width // VOCAB_SIZE, patch_length=position.shape[0] if position is not None else 512,
            type_vocab_size=types.shape[0] if types is not None else 2, decoder_layers=dec_layers,
            decoder_heads=heads, projection=has_proj,
        )
    except ConfigError as error:
        raise CheckpointError(f"cannot size the encoder from the checkpoint: {error}") from None


def map_official_state(state: dict[str, Tensor], prefix: str, proj_prefix: str | None,
                       with_decoder: bool) -> tuple[dict[str, Tensor], list[str]]:
    """Our names for the official tensors, and the official names nothing maps (unexpected)."""
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    qkv: dict[int, dict[str, dict[str, Tensor]]] = {}
    for key, value in state.items():
        if key.startswith(_OTHER_TOWERS) or _IGNORED.search(key):
            continue
        if key.startswith("decoder.") and prefix == "encoder.":
            if not with_decoder:
                continue
            name = _map_decoder_key(key, value)
            if name is None:
                unexpected.append(key)
            else:
                mapped[name[0]] = name[1]
            continue
        if proj_prefix and key.startswith(proj_prefix):
            mapped["music_proj." + key[len(proj_prefix):]] = value
            continue
        if not key.startswith(prefix):
            unexpected.append(key)
            continue
        rest = key[len(prefix):]
        simple = {
            "patch_embedding.weight": "encoder.patch_embedding.weight",
            "patch_embedding.bias": "encoder.patch_embedding.bias",
            "base.embeddings.position_embeddings.weight": "encoder.position_embedding.weight",
            "base.embeddings.token_type_embeddings.weight": "encoder.token_type_embedding.weight",
            "base.embeddings.LayerNorm.weight": "encoder.embed_norm.weight",
            "base.embeddings.LayerNorm.bias": "encoder.embed_norm.bias",
        }
        if rest in simple:
            mapped[simple[rest]] = value
            continue
        match = re.match(r"base\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", rest)
        if not match:
            unexpected.append(key)
            continue
        layer, module, kind = int(match.group(1)), match.group(2), match.group(3)
        if module in ("attention.self.query", "attention.self.key", "attention.self.value"):
            qkv.setdefault(layer, {}).setdefault(kind, {})[module.rsplit(".", 1)[1]] = value
        elif module in _BERT_LAYER:
            mapped[f"encoder.layers.{layer}.{_BERT_LAYER[module]}.{kind}"] = value
        else:
            unexpected.append(key)
    for layer, kinds in qkv.items():
        for kind, parts in kinds.items():
            if set(parts) == {"query", "key", "value"}:
                mapped[f"encoder.layers.{layer}.qkv.{kind}"] = torch.cat([parts["query"], parts["key"],
                                                                          parts["value"]])
    return mapped, unexpected


def _map_decoder_key(key: str, value: Tensor) -> tuple[str, Tensor] | None:
    rest = key[len("decoder.base.transformer."):] if key.startswith("decoder.base.transformer.") else None
    if rest is None:
        return None
    if rest in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        return "decoder." + rest, value
    match = re.match(r"h\.(\d+)\.(.+)\.(weight|bias)$", rest)
    if not match or match.group(2) not in _GPT2_LAYER:
        return None
    module, kind = match.group(2), match.group(3)
    if module in _CONV1D and kind == "weight":
        value = value.t()  # GPT-2 Conv1D stores [in, out]
    return f"decoder.blocks.{match.group(1)}.{module}.{kind}", value


def _strict_load(model: M3Model, mapped: dict[str, Tensor], unexpected: list[str], path: Path,
                 what: str) -> None:
    own = model.state_dict()
    problems = layout_problems(mapped, {k: tuple(v.shape) for k, v in own.items()}, extra_unexpected=unexpected)
    if problems:
        raise CheckpointError(f"{path}: does not match the {what} layout; " + "; ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)


def load_official(path: str | Path, with_decoder: bool = False, num_heads: int | None = None) -> LoadedEncoder:
    """Load an official CLaMP 2 / CLaMP 3 / M3 `.pth` (music tower only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    checkpoint = _read_official(path)
    state = {k: v for k, v in checkpoint["model"].items() if isinstance(v, Tensor)}
    kind, prefix, proj_prefix = _detect(state, path)
    has_proj = proj_prefix is not None and any(k.startswith(proj_prefix) for k in state)
    if kind in ("clamp2", "clamp3") and not has_proj:
        raise CheckpointError(f"{path}: {kind} checkpoint without its {proj_prefix}* projection")
    with_decoder = with_decoder and kind == "m3"
    config = _infer_config(state, prefix, has_proj, num_heads)
    if with_decoder and config.decoder_layers == 0:
        raise CheckpointError(f"{path}: M3 checkpoint without decoder.* tensors")
    model = M3Model(config, with_decoder=with_decoder)
    mapped, unexpected = map_official_state(state, prefix, proj_prefix, with_decoder)
    _strict_load(model, mapped, unexpected, path, f"official {kind.upper()}")
    names = {"clamp2": "CLaMP 2", "clamp3": "CLaMP 3", "m3": "M3"}
    info = {k: checkpoint[k] for k in ("epoch", "best_epoch", "min_eval_loss") if k in checkpoint
            and isinstance(checkpoint[k], (int, float))}
    return LoadedEncoder(model.eval(), kind, "clamp2" if has_proj else "m3", names[kind], _file_sha(path), path,
                         info)


def save_encoder(model: M3Model, directory: str | Path, name: str = "notagen-m3",
                 training: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` then `config.json` (the config last, so a readable config means whole weights)."""
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / "model.safetensors", save(tensors))
    atomic_write_json(directory / "config.json", {
        "format": FORMAT, "name": name, "encoder": model.config.to_dict(),
        "has_decoder": model.decoder is not None, "training": training or {},
    })
    return directory


def load_native(path: str | Path, with_decoder: bool = False) -> LoadedEncoder:
    """Load one of our encoder directories (or its model.safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{directory}: not an encoder directory (needs config.json and model.safetensors)")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        config = EncoderConfig.from_dict(meta["encoder"])
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{config_path}: unreadable encoder config ({error})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights_path}: cannot read safetensors ({str(error).splitlines()[0]})") from None
    with_decoder = with_decoder and bool(meta.get("has_decoder"))
    model = M3Model(config, with_decoder=with_decoder)
    if not with_decoder:
        state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    state = {_LEGACY_DECODER.sub(lambda m: m.group(1) + _LEGACY_NAMES[m.group(2)] + ".", k): v
             for k, v in state.items()}
    _strict_load(model, state, [], weights_path, "notagen encoder")
    mode = "clamp2" if config.projection else "m3"
    return LoadedEncoder(model.eval(), "notagen", mode, str(meta.get("name", "notagen-m3")),
                         _file_sha(weights_path), directory, dict(meta.get("training", {})))


def load_encoder(path: str | Path | None = None, with_decoder: bool = False) -> LoadedEncoder:
    """Load an encoder from a directory of ours or an official `.pth`; None = the shipped encoder."""
    if path is None:
        if not (DEFAULT_ENCODER_DIR / "config.json").is_file():
            raise CheckpointError(f"no shipped encoder at {DEFAULT_ENCODER_DIR}; pass --encoder PATH "
                                  "(train one with `notagen encoder train`)")
        path = DEFAULT_ENCODER_DIR
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such encoder file or directory")
    if path.is_dir() or path.suffix == ".safetensors" or path.name == "config.json":
        return load_native(path, with_decoder=with_decoder)
    return load_official(path, with_decoder=with_decoder)


def export_encoder(source: str | Path, destination: str | Path, half: bool = True) -> Path:
    """Copy an encoder for shipping: encoder (+ projection) only, optionally stored as float16 (loaded as float32).

    The small preset then takes ~11 MB instead of ~28 MB with its pre-training decoder in float32.
    """
    loaded = load_encoder(source, with_decoder=False)
    model = loaded.model
    if half:
        model = M3Model(model.config, with_decoder=False)
        model.load_state_dict(loaded.model.state_dict())
        model.half()
    training = {**loaded.info, "exported_from": str(loaded.path), "source_weights": loaded.weights_id,
                "dtype": "float16" if half else "float32"}
    return save_encoder(model, destination, loaded.name, training)
