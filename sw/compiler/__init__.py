"""Compiler: quantized model -> binary program for one accelerator config."""

from .compile import (SUPPORTED_OPS, CompileError, Gemm, OutTile, Unit, allocate, compile_model,
                      emit_unit, lower_conv, lower_fc)
from .program import NodeCode, Program

__all__ = ["SUPPORTED_OPS", "CompileError", "Gemm", "NodeCode", "OutTile", "Program", "Unit",
           "allocate", "compile_model", "emit_unit", "lower_conv", "lower_fc"]
