"""Verilog generation time per dataflow and array size, measured in one run.

    python benchmarks/verilog_gen.py [--arrays 16x16,32x32,64x64] [--dataflows ws,os,rs,feie]

For each point it times the two steps of ``celosia verilog`` separately, uncached:
Amaranth's elaboration and lowering to RTLIL (Python), then Yosys (WebAssembly) writing
Verilog, and prints wall seconds, peak resident memory of this process so far and the
Verilog's line count. Issue 14 item 5 asks for 64x64 in under a minute for every
dataflow; the figures in docs/reliability.md come from this script.
"""

from __future__ import annotations

import argparse
import resource
import time

from amaranth.back import rtlil, verilog

from celosia.rtl.config import DATAFLOWS, AccelConfig, parse_array
from celosia.rtl.top import Accelerator


def measure(config: AccelConfig) -> dict:
    t0 = time.perf_counter()
    text = rtlil.convert(Accelerator(config), name="celosia_accelerator", emit_src=False)
    t1 = time.perf_counter()
    out = verilog._convert_rtlil_text(text)
    t2 = time.perf_counter()
    return {"rtlil_s": t1 - t0, "yosys_s": t2 - t1, "lines": out.count("\n"),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", default="16x16,32x32,64x64")
    ap.add_argument("--dataflows", default=",".join(DATAFLOWS))
    args = ap.parse_args(argv)
    print(f"{'array':>7} {'dataflow':>8} {'RTLIL s':>8} {'Yosys s':>8} {'total s':>8} "
          f"{'lines':>8} {'peak MB':>8}")
    for array in args.arrays.split(","):
        rows, cols = parse_array(array)
        for df in args.dataflows.split(","):
            cfg = AccelConfig(rows=rows, cols=cols, dataflow=df, dram_bytes=1 << 22)
            r = measure(cfg)
            print(f"{array:>7} {df:>8} {r['rtlil_s']:8.1f} {r['yosys_s']:8.1f} "
                  f"{r['rtlil_s'] + r['yosys_s']:8.1f} {r['lines']:8d} {r['peak_mb']:8.0f}", flush=True)


if __name__ == "__main__":
    main()
