"""notagen: NotaGen-style symbolic music generation over interleaved ABC notation."""

__version__ = "0.1.0"
