"""Celosia's own exception types.

The CLI catches :class:`CelosiaError`, prints ``str(e)`` on one line and exits
with status 1, so every message must stand alone: name the file, the node or
tensor, the offending value and what would have been accepted.
(:class:`celosia.rtl.config.ConfigError` predates this module and stays a
``ValueError``.)
"""

from __future__ import annotations

__all__ = ["CelosiaError", "ModelError", "InputError"]


class CelosiaError(Exception):
    """Base of the errors the CLI reports as a one-line message."""


class ModelError(CelosiaError):
    """A model file that cannot be read, or a graph with an unsupported op or shape."""


class InputError(CelosiaError):
    """Input data that does not fit the model (missing tensor, wrong shape, bad file)."""
