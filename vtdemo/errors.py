"""Error types of vtdemo.

Every failure a user can cause or meet (a bad image, a model that cannot be fetched, a checkpoint that does not fit
its architecture) is raised as a subclass of :class:`VtdemoError` whose message is one readable line that says what
went wrong and what to do. The CLI prints that line; the app shows it. Anything else escaping is a bug.

Some remedies are the operator's, not a visitor's (set a variable, fill the cache, delete a file on the server):
such an error also carries `visitor`, the line a web visitor can act on; the app shows that one and logs the
operator's (`for_visitor`).
"""

from __future__ import annotations


class VtdemoError(Exception):
    """Base class: the message is meant for the user, one line, no traceback needed. visitor: the line for a
    visitor of the web app when the message's remedy is the operator's (None: the message itself)."""

    def __init__(self, message: str = "", visitor: str | None = None) -> None:
        super().__init__(message)
        self.visitor = visitor


def for_visitor(exc: VtdemoError) -> str:
    """The line a web visitor sees for `exc`: its `visitor` text if it has one, else its message."""
    return exc.visitor or str(exc)


class ImageError(VtdemoError):
    """An input image cannot be read or used (missing, not an image, truncated, too large, unsupported)."""


class ModelUnavailableError(VtdemoError):
    """The weights or config of a model cannot be fetched (offline, unknown repo, missing file)."""


class UnsupportedModelError(VtdemoError):
    """The repo or folder holds a model of an architecture vtdemo does not implement."""


class CheckpointError(VtdemoError):
    """The weights exist but cannot be used: corrupt file, or keys / shapes that disagree with the config."""


class ExplainError(VtdemoError):
    """An explanation cannot be made for this image and these options (e.g. no detection above the threshold)."""


class InputError(VtdemoError):
    """A parameter value is of the wrong kind or out of range (a NaN threshold, an unknown name, a huge box)."""


class BusyError(VtdemoError):
    """The server cannot take this request now (e.g. the memory for models is held by other visitors' runs): try
    again shortly."""
