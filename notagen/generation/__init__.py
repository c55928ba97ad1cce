"""Generation: the cached engine, sampling, post-processing and the `notagen generate` command.

The names below are imported on first use (PEP 562), so that torch-free parts of the package (the continuation
context, run in a converter worker process) do not load torch by importing this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {"GeneratedPiece": "engine", "GenerationEngine": "engine", "GenerationLimits": "engine",
          "PieceRequest": "engine", "Progress": "engine", "PieceResult": "postprocess", "finish_text": "postprocess",
          "generate_checked": "postprocess", "SamplingSettings": "sampling"}


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'notagen.generation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"notagen.generation.{module}"), name)


__all__ = ["GeneratedPiece", "GenerationEngine", "GenerationLimits", "PieceRequest", "PieceResult", "Progress",
           "SamplingSettings", "finish_text", "generate_checked"]
