"""Exceptions that carry a one-line, user-facing message.

The CLI prints ``effseg: error: <message>`` for any :class:`EffsegError` and exits
with status 2; a bare traceback means a bug in effseg, never bad input.
"""


class EffsegError(Exception):
    """Base class: bad input that the user can fix. ``str(err)`` is one line."""


class ConfigError(EffsegError, ValueError):
    """A config key, value or type is wrong."""


class ModelError(EffsegError, ValueError):
    """Unknown model name, bad model option or incompatible weights."""


class DataError(EffsegError, ValueError):
    """A dataset folder, file or label value is missing or wrong."""


class CheckpointError(EffsegError, ValueError):
    """A checkpoint cannot be read or does not fit the model."""


class ExportError(EffsegError, ValueError):
    """An export cannot be done as asked (bad size, unsupported model, parity failure)."""


class BenchError(EffsegError, ValueError):
    """A benchmark argument is wrong (unknown runtime, bad size, missing model file)."""


class SizeError(ConfigError):
    """A size is not ``WIDTHxHEIGHT`` with two positive integers (e.g. ``480x360``)."""
