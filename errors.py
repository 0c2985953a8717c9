"""Every exception type Celosia raises, in one leaf module.

``celosia.errors`` imports nothing else of ours, so every layer (``rtl``, ``sim``,
``sw``) may import it; it sits below ``celosia.rtl`` in the layering contract
(``[tool.importlinter]`` in ``pyproject.toml``, docs/architecture.md).

The CLI catches :class:`CelosiaError`, prints ``str(e)`` on one line and exits
with status 1, so every message must stand alone: name the file, the node or
tensor, the offending value and what would have been accepted.

Two classes keep a built-in base as well, so code that caught the built-in
before they joined this hierarchy still catches them: :class:`ConfigError` and
:class:`FieldError` are ``ValueError`` s and :class:`IsaError` a ``RuntimeError``.
"""

from __future__ import annotations

__all__ = ["CelosiaError", "ConfigError", "ModelError", "InputError", "CompileError", "DriverError",
           "SimulationError", "IsaError", "FieldError", "EncodeError", "BoardError", "ToolError"]


class CelosiaError(Exception):
    """Base of the errors the CLI reports as a one-line message."""


class ConfigError(CelosiaError, ValueError):
    """An accelerator configuration outside the documented ranges (:mod:`celosia.rtl.config`)."""


class FieldError(CelosiaError, ValueError):
    """A value that does not fit a field of a binary format of :mod:`celosia.rtl.isa`
    (an instruction, a node descriptor, a parameter record): out of the field's range,
    not a member of its enum, or no such field. The compiler turns it into a
    :class:`CompileError` naming the layer."""


class ModelError(CelosiaError):
    """A model file that cannot be read, or a graph with an unsupported op or shape."""


class InputError(CelosiaError):
    """Input data that does not fit the model (missing tensor, wrong shape, bad file)."""


class CompileError(CelosiaError):
    """The model cannot be mapped onto the configured accelerator: its tiles do not fit
    the buffers, or the program and one run's data do not fit ``dram_bytes``
    (:mod:`celosia.sw.compiler`)."""


class EncodeError(CompileError):
    """A value the compiler computed does not fit its instruction field (a
    :class:`FieldError` while encoding); the message names the layer."""


class DriverError(CelosiaError):
    """The hardware stopped with an error code or did not finish (:mod:`celosia.sw.driver`)."""


class SimulationError(CelosiaError):
    """The Verilator build or the simulation failed; the message says where the log is
    (:mod:`celosia.sim.verilator`)."""


class IsaError(CelosiaError, RuntimeError):
    """The instruction-level simulator (:mod:`celosia.sim.isa_sim`) stopped the machine.

    Parameters
    ----------
    code : celosia.rtl.isa.ErrorCode
        The status code the hardware would report (kept as :attr:`code`); the
        message starts with its name.
    message : str
        What went wrong (the offending instruction or address range).
    """

    def __init__(self, code, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


class BoardError(CelosiaError):
    """A board build or board run that cannot go ahead: an unknown board, a design that
    does not fit the device, a missing toolchain, a failed tool (:mod:`celosia.boards`)."""


class ToolError(BoardError):
    """A tool of the board flow failed: ``what`` it was doing, its exit ``code``, the ``line``
    that says why (its last ``ERROR:`` line, or last output line) and the log ``where`` it is."""

    def __init__(self, what: str, code: int, line: str, where):
        super().__init__(f"{what} failed (exit {code}): {line} (full log: {where})")
        self.line = line
