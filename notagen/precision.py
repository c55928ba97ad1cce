"""Inference precision: fp32, bf16, or int8 Linear layers, and what the weights then cost in memory.

* **fp32**: the stored weights as they are.
* **bf16**: every weight in bfloat16 (half the bytes). Fast on CPUs with native bf16 instructions (AVX-512 BF16,
  AMX, recent Arm); elsewhere PyTorch emulates it and it is slower than fp32 (`bf16_is_native` tells which).
* **int8**: the Linear layers of every block of both decoders (attention q/k/v and output projections, MLP) hold
  int8 weights, one scale per output channel (symmetric), and run as PyTorch's dynamically quantised Linear
  (`torch.ao.nn.quantized.dynamic.Linear`: activations quantised per call, int8 GEMM in fbgemm/x86 or qnnpack,
  float output). Embeddings, LayerNorms, the patch embedding and the tied LM head stay fp32. CPU only: a quarter of
  the fp32 bytes, and on the char decoder, which re-reads its weights for every character, that is the speed.

An int8 checkpoint directory stores `<linear>.weight` as int8 plus `<linear>.weight_scale` (float32, [out]); its
config.json says `"precision": "int8"` (see `notagen.checkpoint`). Weights are quantised once, when that directory
is written, with PyTorch's own per-channel observer, so every later start only packs them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from notagen.errors import ConfigError

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCALE_SUFFIX = ".weight_scale"
# The Linear layers that int8 quantises: every block's attention and MLP projections, in both decoders.
QUANTISED = re.compile(r"^(patch_level_decoder\.base|char_level_decoder\.base\.transformer)\.h\.\d+\."
                       r"(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$")


def check_precision(precision: str, device: str | torch.device = "cpu") -> Precision:
    """The precision, checked against the device (int8 runs on the CPU only); ConfigError otherwise."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ConfigError(f"int8 runs on the CPU only (PyTorch's dynamic quantisation), not on {device}; "
                          f"use --precision bf16 there")
    if precision == "int8":
        _quantised_linear_class()  # fails with one line where this torch has no dynamic quantisation
    return precision  # type: ignore[return-value]


def bf16_is_native() -> bool:
    """True when this CPU runs bfloat16 matrix products in hardware (through oneDNN)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@contextmanager
def _quiet() -> Iterator[None]:
    # torch.ao.quantization announces its move to torchao on every call; its dynamic Linear is still the fastest
    # int8 CPU path in PyTorch (torchao's int8 layouts run several times slower on x86 CPUs).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        yield


def _quantised_linear_class() -> type[nn.Module]:
    try:
        with _quiet():
            from torch.ao.nn.quantized.dynamic import Linear
    except ImportError as error:
        raise ConfigError(f"int8 needs PyTorch's dynamic quantisation (torch.ao.nn.quantized.dynamic), which "
                          f"torch {torch.__version__} lacks; use --precision bf16") from error
    return Linear


def is_quantised_key(key: str) -> bool:
    """True for `<linear>.weight` / `.bias` / `.weight_scale` keys of a Linear layer that int8 quantises."""
    for suffix in (SCALE_SUFFIX, ".weight", ".bias"):
        if key.endswith(suffix):
            return bool(QUANTISED.match(key[: -len(suffix)]))
    return False


def quantise_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """A float [out, in] weight → (int8 [out, in], float32 scale [out]), symmetric per output channel."""
    with _quiet():
        from torch.ao.quantization.observer import PerChannelMinMaxObserver

        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        weight = weight.detach().float()
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        quantised = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8)
    return quantised.int_repr().contiguous(), scale.float().contiguous()


def int8_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A float native state dict → the int8 one (quantised weights + scales; everything else fp32)."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.endswith(".weight") and QUANTISED.match(key[: -len(".weight")]):
            out[key], out[key[: -len(".weight")] + SCALE_SUFFIX] = quantise_weight(tensor)
        else:
            out[key] = tensor.float()
    return out


def quantised_linear(weight: Tensor, scale: Tensor, bias: Tensor | None) -> nn.Module:
    """A dynamically quantised Linear holding int8 `weight` [out, in] with per-channel `scale` [out]."""
    linear_class = _quantised_linear_class()
    out_features, in_features = weight.shape
    with _quiet():
        # Built at 1 x 1 and then given the real weight: the constructor would otherwise allocate and pack a
        # full-size placeholder first (a third copy of the layer, and a third of the load time).
        module = linear_class(1, 1, bias_=bias is not None, dtype=torch.qint8)
        module.in_features, module.out_features = in_features, out_features
        zero_points = torch.zeros(out_features, dtype=torch.long)
        qweight = torch._make_per_channel_quantized_tensor(weight, scale.double(), zero_points, 0)
        module.set_weight_bias(qweight, None if bias is None else bias.float())
    return module


def release_freed_memory() -> None:
    """Hand memory freed while loading back to the OS (glibc keeps freed heap blocks; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def install_int8(model: nn.Module, read: Callable[[str], Tensor]) -> None:
    """Replace the model's quantisable Linear layers by int8 ones built from `read(key)` (one layer at a time,
    so a layer's int8 bytes are read, packed and released before the next is read)."""
    for name, module in list(model.named_modules()):
        if not QUANTISED.match(name):
            continue
        bias = read(name + ".bias") if getattr(module, "bias", None) is not None else None
        replacement = quantised_linear(read(name + ".weight"), read(name + SCALE_SUFFIX), bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, replacement)


def model_precision(model: nn.Module) -> Precision:
    """fp32, bf16 or int8, as the model's weights are held now."""
    if any(QUANTISED.match(name) and not isinstance(module, nn.Linear) for name, module in model.named_modules()):
        return "int8"
    dtype = next(model.parameters()).dtype
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's weights occupy (tied tensors once; int8 layers: int8 weights + float scales and bias)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    for name, module in model.named_modules():
        if QUANTISED.match(name) and not isinstance(module, nn.Linear):
            out_features, in_features = module.out_features, module.in_features
            total += out_features * in_features + out_features * 4 * 2  # int8 weight, float scale and bias
    return total


__all__ = ["PRECISIONS", "Precision", "bf16_is_native", "check_precision", "install_int8", "int8_state_dict",
           "is_quantised_key", "model_precision", "quantise_weight", "quantised_linear",
           "weight_bytes"]
