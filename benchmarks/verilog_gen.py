"""Verilog generation time per dataflow and array size, measured in one run.

    python benchmarks/verilog_gen.py [--arrays 16x16,32x32,64x64] [--dataflows ws,os,rs,feie]
                                     [--flat 16x16,32x32]

For each point it times :func:`celosia.sim.verilog.generate` uncached (Amaranth's
elaboration and lowering to RTLIL, then Yosys writing Verilog), with the PE array's
columns / rows instanced (what ``celosia verilog`` and the Verilator back end use) and, for
the arrays named by ``--flat``, also written inline (``instanced=False``: the same circuit
as one flat netlist, as before the blocks; minutes at 64x64). It prints wall and CPU
seconds of this process (Yosys runs in it, as WebAssembly), the Verilog's line count, the peak resident memory of this process so far and the load
average when the point started (the machine is shared: a load above its core count slows
every figure). Issue 14 item 5 asks for 64x64 in under a minute for every dataflow; the
figures in docs/reliability.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from celosia.rtl.config import DATAFLOWS, AccelConfig, parse_array
from celosia.sim.verilog import generate


def measure(config: AccelConfig, instanced: bool) -> dict:
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    text = generate(config, instanced=instanced)
    return {"s": time.perf_counter() - t0, "cpu": time.process_time() - c0, "lines": text.count("\n"),
            "load": load,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", default="16x16,32x32,64x64")
    ap.add_argument("--dataflows", default=",".join(DATAFLOWS))
    ap.add_argument("--flat", default="16x16,32x32",
                    help="arrays also timed written inline ('' for none)")
    args = ap.parse_args(argv)
    flat = set(filter(None, args.flat.split(",")))
    print(f"cores: {os.cpu_count()}")
    print(f"{'array':>7} {'dataflow':>8} {'form':>9} {'wall s':>7} {'CPU s':>6} {'lines':>8} {'peak MB':>8} "
          f"{'load':>5}")
    for array in args.arrays.split(","):
        rows, cols = parse_array(array)
        for df in args.dataflows.split(","):
            cfg = AccelConfig(rows=rows, cols=cols, dataflow=df, dram_bytes=1 << 22)
            for instanced in (True, False) if array in flat else (True,):
                r = measure(cfg, instanced)
                form = "instanced" if instanced else "flat"
                print(f"{array:>7} {df:>8} {form:>9} {r['s']:7.1f} {r['cpu']:6.1f} {r['lines']:8d} "
                      f"{r['peak_mb']:8.0f} {r['load']:5.1f}", flush=True)


if __name__ == "__main__":
    main()
