# amaranth: UnusedElaboratable=no
"""Controller: per-node counter snapshots (node boundaries) and the progress watchdog.

Stub engines as in test_controller.py (busy ``length`` cycles, then ``done``). The bench
watches the engines' issue and ``done`` pulses and works out, independently of the
controller, when each node's last instruction completed and what the counters held then.
"""

from amaranth.lib import wiring

from celosia.rtl import isa
from celosia.rtl.isa import Csr, ErrorCode
from helpers import csr_read_all, csr_write, host_write, program_words, simulate, start_and_wait
from test_controller import CFG, PROG_BASE, Harness, gemm, load, nop, store


def run_nodes(nodes, *, csrs=None, max_cycles=3000, kinds=None):
    """Run once; returns (CSRs at the end, per-cycle samples, snapshots from ``node``)."""
    h = Harness(CFG)
    c = h.ctrl
    samples, snaps, result = [], [], {}

    async def monitor(ctx):
        engines = list(h.engines.values())
        ports = [getattr(c, n).insn for n in h.engines]
        sigs = [c.csr.w_en, c.csr.addr, c.csr.w_data, c.node.done, c.node.index,
                c.node.counters.as_value(), c.events.issue, c.events.fin]
        for port, eng in zip(ports, engines):
            sigs += [port.valid, port.ready, port.payload.as_value(), eng.done, eng.busy]
        async for _, _, w_en, addr, w_data, done, index, counters, issue, fin, *vals in \
                ctx.tick().sample(*sigs):
            per = [vals[5 * i:5 * i + 5] for i in range(len(engines))]
            samples.append({
                "events": (issue, fin),
                "start": bool(w_en and addr == Csr.CTRL and w_data & 1),
                "issue": {n: isa.decode(p[2]) for n, p in zip(h.engines, per) if p[0] and p[1]},
                "done": {n for n, p in zip(h.engines, per) if p[3]},
                "busy": {n for n, p in zip(h.engines, per) if p[4]},
            })
            if done:
                snaps.append((len(samples) - 1, index,
                              [(counters >> (32 * i)) & 0xFFFF_FFFF for i in range(len(isa.COUNTERS))]))

    async def bench(ctx):
        await host_write(ctx, h.dram, program_words(nodes, PROG_BASE, kinds))
        await csr_write(ctx, c.csr, Csr.PROG_BASE, PROG_BASE)
        for addr, value in (csrs or {}).items():
            await csr_write(ctx, c.csr, addr, value)
        await start_and_wait(ctx, c.csr, max_cycles)
        for _ in range(5):
            await ctx.tick()
        result.update(csr_read_all(ctx, c.csr))

    simulate(h, bench, background=[monitor])
    return result, samples, snaps


def expected_snapshots(nodes, samples):
    """(cycle of ``node.done``, CYCLES, INSNS, MACS, LOAD_BUSY) per node, from the
    engines' issue / done pulses: node ``k``'s boundary ``b_k`` is the cycle after the
    last completion of nodes 0..k (and after the previous boundary: one per cycle); the
    snapshot holds the counters' increments of the cycles from the start to ``b_k - 1``
    and ``node.done`` is high in ``b_k + 1``."""
    start = next(i for i, s in enumerate(samples) if s["start"])
    order = [word for node in nodes for word in node]
    queue = {isa.Opcode.LOAD: "load", isa.Opcode.STORE: "store"}
    # completion cycle of each instruction, matched in order per queue
    issued = {"load": [], "compute": [], "store": []}
    completions = {"load": [], "compute": [], "store": []}
    for cyc, s in enumerate(samples):
        for name, insn in s["issue"].items():
            issued[queue.get(insn["op"], "compute")].append(cyc)
        for name in s["done"]:
            completions[{"vector": "compute"}.get(name, name)].append(cyc)
    # NOPs never reach an engine: they complete the cycle after they start; find their
    # starts as the compute-queue starts no engine reported (none in these programs)
    per_queue = {"load": iter(completions["load"]), "compute": iter(completions["compute"]),
                 "store": iter(completions["store"])}
    done_at = [next(per_queue[queue.get(isa.decode(w)["op"], "compute")]) for w in order]
    out, last, b_prev, i = [], -1, -1, 0
    for node in nodes:
        last = max([last] + done_at[i:i + len(node)])
        i += len(node)
        b = max(last + 1, b_prev + 1)
        b_prev = b
        window = samples[start + 1:b]
        insns = sum(len(s["issue"]) for s in window)
        macs = sum(p["m_len"] * p["k_len"] * p["n_len"] for s in window
                   for n, p in s["issue"].items() if n == "compute")
        load_busy = sum("load" in s["busy"] for s in window)
        out.append((b + 1, b - start - 1, insns, macs, load_busy))
    return out


def test_snapshots_at_node_boundaries():
    """A long GEMM in node 0; nodes 1 and 2 (a LOAD, a STORE) complete first but their
    boundaries wait for node 0's and then come one per cycle; node 3 ends last."""
    nodes = [[gemm(m_len=40, k_len=2, n_len=3)], [load(n0=3)], [store(m_len=2)],
             [load(n0=4), gemm(m_len=2, k_len=5, n_len=7), store(m_len=3)]]
    res, samples, snaps = run_nodes(nodes)
    assert (res["STATUS"] >> 8, res["NODES_DONE"]) == (0, 4)
    expected = expected_snapshots(nodes, samples)
    got = [(cyc, cnt[0], cnt[isa.COUNTERS.index(Csr.INSNS)], cnt[isa.COUNTERS.index(Csr.MACS)],
            cnt[isa.COUNTERS.index(Csr.LOAD_BUSY)]) for cyc, _, cnt in snaps]
    assert got == expected
    assert [index for _, index, _ in snaps] == [1, 2, 3, 4]
    # nodes 1 and 2 come in the two cycles after node 0's
    assert [cyc for cyc, *_ in snaps[:3]] == [snaps[0][0], snaps[0][0] + 1, snaps[0][0] + 2]
    # the last node's boundary is the cycle the run finishes: everything but that cycle
    assert snaps[-1][2][0] == res["CYCLES"] - 1
    # the events port: per queue, a start with each issue and a completion with each done
    queue = {"load": 0, "compute": 1, "vector": 1, "store": 2}
    for s in samples:
        assert s["events"][0] == sum(1 << queue[n] for n in s["issue"])
        assert s["events"][1] == sum(1 << queue[n] for n in s["done"])
    # the SNAP_* CSRs hold the last snapshot
    assert [res[f"SNAP_{c.name}"] for c in isa.COUNTERS] == snaps[-1][2]


def test_snapshot_of_node_split_over_descriptors():
    """Descriptors of one kind in a row are one node (one snapshot)."""
    nodes = [[load(n0=2)], [gemm(m_len=3)], [store(m_len=4)]]
    res, samples, snaps = run_nodes(nodes, kinds=[5, 5, 6])
    assert res["NODES_DONE"] == 2
    expected = expected_snapshots([nodes[0] + nodes[1], nodes[2]], samples)
    assert [(cyc, cnt[0]) for cyc, _, cnt in snaps] == [e[:2] for e in expected]


def test_snapshots_with_nops():
    """A NOP completes the cycle after it starts, without an engine: it counts for its node."""
    nodes = [[load(n0=2, push_next=1), nop(pop_prev=1)], [store(m_len=2)]]
    res, _, snaps = run_nodes(nodes)
    assert res["NODES_DONE"] == 2 and len(snaps) == 2
    assert snaps[1][2][0] == res["CYCLES"] - 1
    assert snaps[0][2][isa.COUNTERS.index(Csr.INSNS)] == 2


def test_watchdog_stops_a_run_without_progress():
    """An engine busy for 400 cycles: with WATCHDOG = 100 the machine stops with WATCHDOG
    once nothing was pushed or completed for 100 cycles; with 500 the run completes."""
    nodes = [[load(n0=2), gemm(m_len=400, push_next=1), store(m_len=1, pop_prev=1)]]
    res, _, _ = run_nodes(nodes, csrs={Csr.WATCHDOG: 500})
    assert res["STATUS"] >> 8 == 0 and res["WATCHDOG"] == 500
    res, _, _ = run_nodes(nodes, csrs={Csr.WATCHDOG: 100})
    assert res["STATUS"] >> 8 == ErrorCode.WATCHDOG
    assert res["ERROR_INFO"] == 2  # the STORE, the oldest waiting head
    # it stopped 100 cycles after the last progress (the last push, some 40 cycles in)
    assert 100 < res["CYCLES"] < 100 + 100


def test_watchdog_off_by_default():
    nodes = [[gemm(m_len=300)]]
    res, _, _ = run_nodes(nodes)
    assert res["STATUS"] >> 8 == 0 and res["WATCHDOG"] == 0


def test_node_port_reaches_the_top():
    from celosia.rtl.config import AccelConfig
    from celosia.rtl.controller.signatures import EventSignature, NodeSignature
    from celosia.rtl.top import Accelerator, SimTop

    cfg = AccelConfig(rows=2, cols=2)
    for top in (Accelerator(cfg), SimTop(cfg)):
        assert top.signature.members["node"] == wiring.Out(NodeSignature)
        assert top.signature.members["events"] == wiring.Out(EventSignature)
