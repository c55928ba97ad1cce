"""Generation: the cached engine, sampling, post-processing and the `notagen generate` command."""

from notagen.generation.engine import (
    GeneratedPiece,
    GenerationEngine,
    GenerationLimits,
    PieceRequest,
    Progress,
)
from notagen.generation.postprocess import PieceResult, finish_text, generate_checked
from notagen.generation.sampling import SamplingSettings

__all__ = ["GeneratedPiece", "GenerationEngine", "GenerationLimits", "PieceRequest", "PieceResult", "Progress",
           "SamplingSettings", "finish_text", "generate_checked"]
