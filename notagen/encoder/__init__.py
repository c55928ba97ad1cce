"""M3-style music encoder: patchilizer, model, CLaMP 2 whole-piece features, official weight loading, training."""

from notagen.encoder.features import FeatureExtractor, segments
from notagen.encoder.loading import LoadedEncoder, export_encoder, load_encoder, save_encoder
from notagen.encoder.model import EncoderConfig, M3Model
from notagen.encoder.patchilizer import M3Patchilizer

__all__ = ["EncoderConfig", "FeatureExtractor", "LoadedEncoder", "M3Model", "M3Patchilizer", "export_encoder",
           "load_encoder", "save_encoder", "segments"]
