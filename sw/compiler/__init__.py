"""Compiler: quantized model -> binary program for one accelerator config."""

from .compile import CompileError, FcPlan, compile_model, plan_fc
from .program import NodeCode, Program

__all__ = ["CompileError", "FcPlan", "NodeCode", "Program", "compile_model", "plan_fc"]
