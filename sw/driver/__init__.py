"""Driver: one API over the golden, pysim and verilator back ends."""

from .driver import BACKENDS, DriverError, Result, golden_forward, run, run_quantized

__all__ = ["BACKENDS", "DriverError", "Result", "golden_forward", "run", "run_quantized"]
