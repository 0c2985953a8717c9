"""Layer outputs kept on chip: an fc layer's STOREs write the next fc layer's input block
into the ifmap buffer (``to_buf``) and that layer loads no ifmap (issue 10, "What to build"
5). Programs run on :class:`~celosia.sim.isa_sim.IsaSim` (directly, under several
schedules, and through the driver's job) against the golden model; the RTL back end is in
``tests/cocotb/test_kept_outputs_verilator.py``."""

import asyncio
import math

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Buffer, Opcode
from celosia.sim.golden import add_params
from celosia.sim.isa_sim import run_program
from celosia.sim.job import run_job
from celosia.sw.analysis import program_traffic
from celosia.sw.compiler import compile_model
from celosia.sw.driver import build_job, golden_forward, kept_outputs_report, run_quantized
from celosia.sw.quant.model import QModel
from test_compiler import SEEDS, make_model, random_input
from test_compiler_vec import vec_layer
from test_resident_weights import IsaTransport, decoded, digits_models  # noqa: F401 (fixture)

DATAFLOWS = ("ws", "os", "feie", "rs")


def ifmap_loads(node):
    return [d for d in decoded(node.insns) if d["op"] == Opcode.LOAD and d["buf"] == Buffer.IFMAP]


def stores(node):
    return [d for d in decoded(node.insns) if d["op"] == Opcode.STORE]


def assert_bit_exact(program, model, x_q, seeds=SEEDS[:3]):
    want = golden_forward(model, x_q)
    for seed in seeds:
        got, tokens = run_program(program, x_q, seed)
        np.testing.assert_array_equal(got, want)
        assert all(v == 0 for v in tokens.values())


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8), (8, 4)])
@pytest.mark.parametrize("batch", [1, 3])
def test_digits_mlp_keeps_hidden_layers(digits_models, dataflow, rows, cols, batch):
    """digits MLP (64 -> 64 -> 32 -> 10): fc0 and fc1 keep their outputs, fc1 and fc2 load no
    ifmap, the last layer stores to DRAM; bit-exact; DRAM bytes per run drop by exactly the
    stores and loads of the two hidden activations (and the LOADs' fetch)."""
    qmodel, x_q = digits_models["digits_mlp"]
    x_q = x_q[:batch]
    config = AccelConfig(rows=rows, cols=cols, dataflow=dataflow)
    on = compile_model(qmodel, config, batch=batch)
    off = compile_model(qmodel, config, batch=batch, keep_outputs=False)
    assert on.kept["layers"] == ["fc0", "fc1"] and not off.kept
    fc0, fc1, fc2 = on.nodes
    assert ifmap_loads(fc0) and not ifmap_loads(fc1) and not ifmap_loads(fc2)
    assert all(d["to_buf"] for d in stores(fc0) + stores(fc1))
    assert not any(d["to_buf"] for d in stores(fc2))
    # Every kept byte lands once: (batch x channels) buffer bytes per layer.
    for node, n in ((fc0, 64), (fc1, 32)):
        assert sum(d["m_len"] * d["n_len"] for d in stores(node)) == batch * n
    assert [nd.tiles["output_kept"] for nd in on.nodes] == [True, True, False]
    assert_bit_exact(on, qmodel, x_q)
    t_on, t_off = program_traffic(on), program_traffic(off)
    removed = sum(len(ifmap_loads(a)) - len(ifmap_loads(b)) for a, b in zip(off.nodes, on.nodes))
    assert removed == sum(on.kept["saved_insns"].values()) > 0
    # fc0 / fc1 write batch*64 / batch*32 bytes less; each unit of fc1 / fc2 read them once.
    units = {nd.name: nd.tiles["units"] for nd in on.nodes}
    data = batch * (64 + 32) + batch * (64 * units["fc1"] + 32 * units["fc2"])
    assert (t_off.read + t_off.written) - (t_on.read + t_on.written) == data + isa.INSN_BYTES * removed
    assert on.kept["saved_bytes"] == data + isa.INSN_BYTES * removed
    rep = kept_outputs_report(on)
    assert rep["dram_bytes_per_inference"] == round((t_on.read + t_on.written) / batch, 4)
    assert rep["dram_bytes_per_inference_through_dram"] == round((t_off.read + t_off.written) / batch, 4)


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_chain_alternates_halves_and_units_split(dataflow):
    """A five-layer chain with several parameter units per layer (a small parameter buffer):
    every hidden output is kept, the halves alternate (a layer writes the half it does not
    read), bit-exact at batch 2."""
    rng = np.random.default_rng(21)
    model = make_model(rng, [20, 24, 9, 30, 16, 7])
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, param_rows=4, ifmap_rows=64)
    program = compile_model(model, config, batch=2)
    assert program.kept["layers"] == ["fc0", "fc1", "fc2", "fc3"]
    assert any(nd.tiles["units"] > 1 for nd in program.nodes)
    half = config.ifmap_rows // 2
    for k, node in enumerate(program.nodes[:-1]):
        rows = {d["buf_row"] // half for d in stores(node)}
        assert rows == {(k + 1) % 2}, (node.name, rows)
    assert_bit_exact(program, model, random_input(rng, model, 2))


@pytest.mark.parametrize("why, config, batch", [
    ("rows % cols != 0", AccelConfig(rows=4, cols=8), 1),
    ("input block does not fit an ifmap half", AccelConfig(rows=4, cols=4, ifmap_rows=8), 1),
    ("switched off", None, 2),
])
def test_not_kept(digits_models, why, config, batch):
    """Where the output cannot stay (or the switch is off) every layer goes through DRAM,
    as before, and stays bit-exact."""
    qmodel, x_q = digits_models["digits_mlp"]
    keep = config is not None
    config = config or AccelConfig(rows=4, cols=4)
    program = compile_model(qmodel, config, batch=batch, keep_outputs=keep)
    assert not program.kept, why
    assert all(ifmap_loads(nd) for nd in program.nodes)
    assert not any(d["to_buf"] for nd in program.nodes for d in stores(nd))
    assert_bit_exact(program, qmodel, x_q[:batch])


def test_output_with_two_readers_or_into_an_add_goes_to_dram():
    """fc0 feeds fc1 and a residual add; fc1 feeds the add (not an fc); the add feeds fc2
    (not produced by an fc): nothing is kept."""
    rng = np.random.default_rng(5)
    base = make_model(rng, [12, 8, 8, 6], activations=["none"] * 3)
    fc0, fc1, fc2 = base.layers
    p = add_params(0.05, 0.05, 0.05)
    add = vec_layer("add", "add", (1, 1, 8), (1, 1, 8), p["out_m0"], p["out_shift"], fc1.out_zp,
                    fc0.out_zp, inputs=["fc1", "fc0"],
                    attrs={"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
                           "b_shift": p["b_shift"], "b_zp": fc0.out_zp, "left_shift": p["left_shift"]})
    fc2.inputs = ["add"]
    model = QModel("res_fc", [fc0, fc1, add, fc2], base.input_scale, base.input_zp, input_shape=(12,))
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=2)
    assert not program.kept
    assert_bit_exact(program, model, random_input(rng, model, 2))


def test_driver_job_and_report(digits_models):
    """Through the driver's job (init graph, profiling prefixes, three runs of two samples)
    the outputs match the golden model; the golden back end's report carries the figures."""
    qmodel, x_q = digits_models["digits_mlp"]
    config = AccelConfig(rows=4, cols=4, weight_rows=4096)
    program = compile_model(qmodel, config, batch=2)
    job, _, lead = build_job(program, x_q, profile=True)
    results = asyncio.run(run_job(IsaTransport(config, seed=2), job))
    y_q = np.frombuffer(b"".join(r.data[0] for r in results[len(lead):]), np.int8).reshape(6, -1)
    np.testing.assert_array_equal(y_q, golden_forward(qmodel, x_q))
    rep = run_quantized(qmodel, x_q, config, batch=2).report
    kept, roof = rep["kept_outputs"], rep["roofline"]
    assert kept["enabled"] and kept["layers"] == ["fc0", "fc1"]
    assert roof["dram_bytes_per_inference"] == kept["dram_bytes_per_inference"]
    off = run_quantized(qmodel, x_q, config, batch=2, keep_outputs=False).report
    assert not off["kept_outputs"]["enabled"]
    assert off["roofline"]["dram_bytes_per_inference"] == kept["dram_bytes_per_inference_through_dram"]
    assert math.isclose(kept["dram_bytes_per_inference_through_dram"] - kept["dram_bytes_per_inference"],
                        program.kept["saved_bytes"] / 2)
