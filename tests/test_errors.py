"""celosia.errors: one hierarchy under CelosiaError, built-in bases kept where callers relied on them."""

import ast
from pathlib import Path

import pytest

from celosia import errors
from celosia.errors import (CelosiaError, CompileError, ConfigError, DriverError, FieldError, InputError,
                            IsaError, ModelError, SimulationError)


def test_every_error_is_a_celosia_error():
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert sorted(c.__name__ for c in classes) == sorted(errors.__all__)
    for cls in classes:
        assert issubclass(cls, CelosiaError)
    assert {ConfigError, ModelError, InputError, CompileError, DriverError, SimulationError, IsaError,
            FieldError} <= set(classes)


def test_no_error_class_outside_celosia_errors():
    """All errors live in one module: no other module of the package defines an exception class."""
    root = Path(errors.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] in (".venv", "tests", "benchmarks", "examples", "build") or path == Path(errors.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases):
                offenders.append(f"{rel}:{node.lineno} {node.name}")
    assert offenders == []


def test_builtin_bases_kept():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(FieldError, ValueError)
    assert issubclass(IsaError, RuntimeError)


def test_old_import_paths_name_the_same_classes():
    from celosia.rtl.config import ConfigError as config_error
    from celosia.sim.isa_sim import IsaError as isa_error
    from celosia.sim.verilator import SimulationError as simulation_error
    from celosia.sw.compiler import CompileError as compile_error
    from celosia.sw.driver import DriverError as driver_error

    assert (config_error, isa_error, simulation_error, compile_error, driver_error) == (
        ConfigError, IsaError, SimulationError, CompileError, DriverError)


def test_config_error_from_accel_config():
    from celosia.rtl.config import AccelConfig

    with pytest.raises(CelosiaError, match="rows"):
        AccelConfig(rows=0)


def test_isa_error_message_and_code():
    from celosia.rtl.isa import ErrorCode

    e = IsaError(ErrorCode.ILLEGAL_OPCODE, "opcode 7")
    assert str(e) == "ILLEGAL_OPCODE: opcode 7" and e.code is ErrorCode.ILLEGAL_OPCODE
