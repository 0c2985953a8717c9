"""The driver's use of the per-node snapshots and instruction events, on hand-made runs:
layer boundaries (nodes without instructions, the last layer ending with the run) and the
instruction trace (the i-th start and completion of a queue are its i-th instruction)."""

from types import SimpleNamespace

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Opcode
from celosia.sim.job import COUNTERS, RunResult, node_snapshot
from celosia.sw.compiler.program import NodeCode, Program
from celosia.sw.driver.driver import instruction_trace, layer_boundaries

LOAD = isa.encode(Opcode.LOAD, n0=1, n1=1, n2=1)
GEMM = isa.encode(Opcode.GEMM, m_len=1, k_len=1, n_len=1)
STORE = isa.encode(Opcode.STORE, m_len=1, n_len=1)
NOP = isa.encode(Opcode.NOP)


def program(*nodes):
    return Program(config=AccelConfig(rows=2, cols=2), batch=1,
                   nodes=[NodeCode(f"n{k}", "fc", list(insns), 0) for k, insns in enumerate(nodes)],
                   static=b"", input_bytes=1, output_bytes=1, scratch_bytes=0, in_features=1,
                   out_features=1)


def counters(cycles):
    """Counters with CYCLES = ``cycles`` and every other counter ``cycles * 10``."""
    return {name: cycles if name == "cycles" else cycles * 10 for name in COUNTERS}


def result(snapshot_cycles, final):
    snaps = [node_snapshot(i + 1, list(counters(c).values())) for i, c in enumerate(snapshot_cycles)]
    return RunResult(status=2, error=0, error_info=0, counters=counters(final), data=[], nodes=snaps)


def test_boundaries_skip_nodes_without_instructions():
    """Node 1 has no instructions (no descriptor, no snapshot): its boundary is node 0's,
    so it gets no cycles; the last node with instructions ends with the run (its snapshot
    is the cycle before), and so does a trailing empty node."""
    prog = program([LOAD, GEMM], [], [STORE], [])
    bounds = layer_boundaries(prog, result([40, 69], final=70))
    assert [b["cycles"] for b in bounds] == [40, 40, 70, 70]
    assert bounds[0]["macs"] == 400 and bounds[2]["macs"] == 700


def test_a_node_over_65535_instructions_has_one_boundary():
    """A node of more than MAX_DESC_INSNS instructions takes several descriptors of one
    kind, which the controller takes as one node (rtl/controller/fetch.py): one snapshot,
    at the end of its last descriptor (a full ResNet-18 on 8x8, whose conv1 has 3
    descriptors, got no per-layer cycles while the driver expected one per descriptor)."""
    from celosia.sw.compiler.program import MAX_DESC_INSNS
    prog = program([NOP] * (2 * MAX_DESC_INSNS + 3), [LOAD], [STORE])
    assert [len(prog.descriptor_counts(nd)) for nd in prog.nodes] == [3, 1, 1]
    bounds = layer_boundaries(prog, result([30, 40, 49], final=50))
    assert [b["cycles"] for b in bounds] == [30, 40, 50]
    assert layer_boundaries(prog, result([10, 20, 30, 40, 49], final=50)) is None  # one per descriptor


def test_boundaries_need_one_snapshot_per_node():
    prog = program([LOAD], [STORE])
    assert layer_boundaries(prog, result([10], final=30)) is None  # one missing
    assert layer_boundaries(prog, result([], final=30)) is None    # a back end without them


def test_instruction_trace_matches_starts_and_completions_per_queue():
    """LOADs, the compute queue (a GEMM and a NOP) and STOREs start and complete in
    order within each queue but interleave across queues."""
    prog = program([LOAD, GEMM, STORE], [LOAD, NOP])
    model = SimpleNamespace(layers=[SimpleNamespace(name="fc0"), SimpleNamespace(name="fc1")])
    L, C, S = 1, 2, 4  # queue bits
    events = [(0, L, 0), (3, 0, L), (4, L | C, 0), (6, 0, L), (9, 0, C), (10, S | C, 0),
              (11, 0, C), (15, 0, S)]
    trace = instruction_trace(prog, model, events)["traceEvents"]
    slices = {e["name"]: (e["tid"], e["ts"], e["dur"], e["args"]["index"])
              for e in trace if e["ph"] == "X"}
    assert slices == {"L0 fc0 LOAD": (1, 0, 4, 0), "L0 fc0 COMPUTE": (2, 4, 6, 1),
                      "L0 fc0 STORE": (4, 10, 6, 2), "L1 fc1 LOAD": (1, 4, 3, 3),
                      "L1 fc1 NOP": (2, 10, 2, 4)}
    tracks = {e["tid"]: e["args"]["name"] for e in trace if e["ph"] == "M"}
    assert tracks == {1: "LOAD", 2: "COMPUTE", 3: "VECTOR", 4: "STORE"}
