"""User-facing errors.

Anything a user can cause (a bad path, a malformed score, an unknown prompt, a wrong checkpoint) is raised as a
`NotaGenError` subclass with a one-line message naming what and where; the CLI prints it without a traceback and
exits non-zero. Programming errors stay ordinary exceptions.
"""


class NotaGenError(Exception):
    """A user-facing failure; `str(error)` is the whole message."""


class InputError(NotaGenError):
    """An input file or folder is missing, unreadable or malformed."""


class ConversionError(NotaGenError):
    """A score could not be converted between formats."""


class CheckpointError(NotaGenError):
    """A checkpoint is missing, corrupt or does not match the expected layout."""


class PromptError(NotaGenError):
    """A (period, composer, instrumentation) prompt is not in the model's registry."""


class ConfigError(NotaGenError):
    """A recipe or option value is invalid."""


class MetricError(NotaGenError):
    """A metric cannot be computed from the pieces or embeddings given (too few, mismatched shapes)."""
