"""Driver: one API over the golden, pysim and verilator back ends."""

from .driver import (BACKENDS, DriverError, Result, build_job, golden_forward, pgo_training_job,
                     resident_weights_report, kept_outputs_report, run, run_quantized)

__all__ = ["BACKENDS", "DriverError", "Result", "build_job", "golden_forward", "pgo_training_job",
           "resident_weights_report", "kept_outputs_report", "run", "run_quantized"]
