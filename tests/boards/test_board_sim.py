"""The board top, UART bridge included, in Verilator, driven over a pty by the pyserial
transport: the same job as the simulators, bit-exact against the golden model.

Slow target (README "Long tests"): the board model's Verilator build takes about a
minute the first time (cached after); each test then runs in seconds. The bridge's
framing is tested fast in the Amaranth simulator (test_bridge.py) and the transport
against a Python stand-in for the board (test_transport.py).
"""

import numpy as np
import pytest

from celosia.boards.build import BOARDS
from celosia.boards.simulate import simulated_board
from celosia.rtl.config import AccelConfig
from celosia.sim.board import board_info
from celosia.sw import cli
from celosia.sw.compiler import compile_model
from celosia.sw.data import digits_split
from celosia.sw.demo import MODEL
from celosia.sw.driver import golden_forward, run
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph

pytestmark = pytest.mark.slow

#: 2x2 ws as `celosia build --board ulx3s-85f --array 2x2` builds it: 128 KiB of on-chip
#: memory (the digits MLP's program at 2x2 is 58 KiB: it does not fit 64 KiB), 256 ifmap rows.
CONFIG = AccelConfig(rows=2, cols=2, **BOARDS["ulx3s-85f"].defaults)
N = 8


@pytest.fixture(scope="module")
def digits():
    x_train, x_test, _, _ = digits_split()
    return quantize_graph(load_onnx(MODEL), x_train), x_train, x_test[:N]


@pytest.fixture(scope="module")
def port():
    with simulated_board(CONFIG) as name:
        yield name


def test_digits_mlp_bit_exact_through_the_uart(digits, port):
    qmodel, _, x = digits
    info = board_info(port)
    assert info["host_words"] * 8 == CONFIG.dram_bytes and info["config"] == CONFIG
    hw = run(qmodel, x, CONFIG, backend="board", board={"port": port})
    expected = golden_forward(qmodel, qmodel.quantize_input(x).reshape(N, -1))
    np.testing.assert_array_equal(hw.y_q, expected)
    # the hardware counters came back over the bridge: MACs from the layer shapes
    macs = sum(layer.in_features * layer.out_features for layer in qmodel.layers) * N
    assert hw.report["hw_macs"] == macs
    # per-layer figures need every node snapshot, which a host polling over the UART cannot
    # catch: none are claimed
    assert all(layer["cycles"] is None for layer in hw.report["layers"])
    assert "not available" in hw.report["layer_cycles_note"]
    # a second job on the same board: the memory is cleared first, the results are the same
    again = run(qmodel, x[::-1], CONFIG, backend="board", board={"port": port})
    np.testing.assert_array_equal(again.y_q, expected[::-1])


def test_cli_run_on_the_board_takes_the_config_from_it(digits, port, tmp_path, capsys):
    qmodel, x_train, x = digits
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "calib.npy", x_train)
    rc = cli.main(["run", str(MODEL), "--input", str(tmp_path / "x.npy"), "--calib",
                   str(tmp_path / "calib.npy"), "--backend", "board", "--port", port,
                   "--out", str(tmp_path / "y.npy")])
    assert rc == 0, capsys.readouterr().err
    y = np.load(tmp_path / "y.npy")
    golden = run(qmodel, x, CONFIG, backend="golden")
    np.testing.assert_array_equal(y, golden.y)
    out = capsys.readouterr()
    assert "backend board" in out.out and "on board (2x2 ws)" in out.err


def test_a_board_of_another_config_is_refused(port, capsys):
    rc = cli.main(["run", str(MODEL), "--random", "1", "--backend", "board", "--port", port,
                   "--array", "4x4"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # (after the calibration notes)
    assert last.startswith("celosia run: error: ")
    assert "the board runs another accelerator configuration" in last


def test_program_fits_the_board_memory_but_not_half_of_it(digits):
    qmodel, _, _ = digits
    compile_model(qmodel, CONFIG).check_dram(1, True)
    with pytest.raises(Exception, match="does not fit the DRAM"):
        compile_model(qmodel, AccelConfig(rows=2, cols=2, dram_bytes=64 * 1024)).check_dram(1, True)
