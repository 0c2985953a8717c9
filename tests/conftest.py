"""Shared test helpers (``tests/layer_cases.py``) are importable from every test folder."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests' simulations are short: a profile-guided Verilator build (two compiles and a training
# run, celosia.sim.verilator.PGO_ENV) costs more than its ~20% faster simulation saves, so the
# suite builds without PGO unless the caller asks for it; the results are the same either way.
# tests/cocotb/test_verilator_backend.py turns it on to keep the PGO build itself tested.
os.environ.setdefault("CELOSIA_VERILATOR_PGO", "0")
