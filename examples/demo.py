"""Run the bundled digits models on the simulated accelerator (what ``celosia demo`` does).

    python -m celosia.examples.demo [--backend golden|pysim|verilator] [--samples N] ...

A thin script over :func:`celosia.sw.demo.demo`; it takes the options of ``celosia demo``.
"""

from __future__ import annotations

import sys

from celosia.sw.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
