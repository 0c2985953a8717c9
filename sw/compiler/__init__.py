"""Compiler: quantized model -> binary program for one accelerator config.

Modules: :mod:`.compile` (the driver, :func:`compile_model`), :mod:`.alloc` (DRAM
allocation), :mod:`.tiling` (the tiled intermediate form and its builders), the
lowering families :mod:`.lower_gemm` (ws, os, feie), :mod:`.lower_rs` (rs) and
:mod:`.lower_vec` (vector ops, every dataflow), :mod:`.emit` (instructions and
tokens) and :mod:`.program` (the binary program).
"""

from celosia.errors import CompileError, EncodeError
from .alloc import Allocation, allocate
from .compile import SUPPORTED_OPS, compile_model
from .emit import emit_unit
from .lower_gemm import lower_conv, lower_fc
from .program import RUN_ONLY_FIELDS, NodeCode, Program, program_key
from .tiling import GemmOp, Load, OutTile, Store, Unit, VecOp, Window

__all__ = ["SUPPORTED_OPS", "RUN_ONLY_FIELDS", "Allocation", "CompileError", "EncodeError", "GemmOp", "Load",
           "NodeCode", "OutTile", "Program", "Store", "Unit", "VecOp", "Window", "allocate", "compile_model",
           "emit_unit", "lower_conv", "lower_fc", "program_key"]
