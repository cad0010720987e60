"""User-facing errors: each carries one actionable line (which file, which field, what was expected).

The CLI prints the message of any `CpclError` and exits non-zero without a traceback;
anything else is a bug and keeps its traceback.
"""


class CpclError(Exception):
    """Base class of every error caused by user input (files, options, configs)."""


class DataError(CpclError):
    """A dataset annotation file or image is missing, malformed or unreadable."""


class ConfigError(CpclError):
    """A config file, field or command-line override is invalid."""


class CheckpointError(CpclError):
    """A model checkpoint is missing, unreadable, or does not match the model it is loaded into."""


class SearchIndexError(CpclError):
    """A search index directory is missing, malformed, or does not match the model it is used with."""


class TrainingError(CpclError):
    """Training cannot go on: a loss turned NaN or infinite (the config's hyperparameters, usually)."""


class RunDirError(CpclError):
    """A run directory cannot be written (read-only, full disk) or what it holds cannot be resumed."""
