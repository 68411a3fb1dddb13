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


def refused_pickle_message(path: object, err: BaseException) -> str:
    """The one-line message for a checkpoint that ``torch.load(weights_only=True)`` refused.

    It says that the file was refused because it carries code (naming the Python object it would
    have imported, when torch's message gives one) and never suggests turning the protection off.
    """
    import re

    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global[: ]+([\w.]+)", text, re.IGNORECASE)
    what = f" (it would import and run {found.group(1)})" if found else ""
    return (
        f"{path}: refused: the file carries code{what}, and effseg loads only plain weights "
        "(tensors, numbers, strings, lists, dicts); use a checkpoint written by effseg or "
        "torch.save(model.state_dict())"
    )
