"""Per-instruction issue / done cycles of the RTL, from the Amaranth simulator, for the
differential tests of the ``perf`` model (tests/sim/test_perf.py).

:func:`rtl_trace` runs a :class:`~celosia.sim.job.Job` on ``SimTop`` like
:func:`celosia.sim.pysim.run`, and watches the handshakes between the controller and the
four engines (``insn.valid & insn.ready``: an issue; ``done`` / ``error``: a completion),
counting cycles from each run's ``CTRL`` write as cycle 0 (as :mod:`celosia.sim.perf`
does). :func:`first_difference` names the first instruction whose timing differs.
"""

from amaranth.hdl import Elaboratable
from amaranth.sim import Simulator

from celosia.rtl.isa import Csr
from celosia.sim.job import run_job
from celosia.sim.pysim import PysimTransport

ENGINES = ("load", "compute", "vector", "store")


class _Elaborated(Elaboratable):
    """An already elaborated module (so its submodules are the ones we watch)."""

    def __init__(self, module):
        self.module = module

    def elaborate(self, platform):
        return self.module


def rtl_trace(config, job):
    """``(results, traces)``: :func:`celosia.sim.pysim.run`'s results and, per run, engine
    name -> list of ``[issue, done]`` cycles in issue order."""
    from celosia.rtl.top import SimTop

    top = SimTop(config)
    m_top = top.elaborate(None)
    accel, src = m_top._named_submodules["accel"]
    m_acc = accel.elaborate(None)
    top._MustUse__silence = accel._MustUse__silence = True  # elaborated here, by hand
    m_top._named_submodules["accel"] = (_Elaborated(m_acc), src)
    engines = {name: m_acc._named_submodules[name][0] for name in ENGINES}
    sim = Simulator(_Elaborated(m_top))
    sim.add_clock(1e-8)
    results, traces = [], []

    async def bench(ctx):
        results.extend(await run_job(PysimTransport(ctx, top), job, poll_cycles=16))

    sigs = [top.csr.w_en, top.csr.addr, top.csr.w_data]
    for eng in engines.values():
        sigs += [eng.insn.valid, eng.insn.ready, eng.done, eng.error]
    arb = m_acc._named_submodules["arbiter"][0]
    sigs += [arb.bus.req.valid, arb.bus.req.ready, arb.bus.req.payload.tag]

    async def watch(ctx):
        cycle, run = 0, None
        async for _, _, *v in ctx.tick().sample(*sigs):
            # v: the values in the cycle that ends at this edge
            cycle += 1
            if v[0] and v[1] == Csr.CTRL and v[2] & 1:
                run = {name: [] for name in ENGINES}
                run["grants"] = []
                traces.append(run)
                cycle = 0
                continue
            if run is None:
                continue
            if v[-3] and v[-2]:
                run["grants"].append((cycle, v[-1]))
            for e, name in enumerate(engines):
                valid, ready, done, error = v[3 + 4 * e: 7 + 4 * e]
                if done or error:
                    pending = [x for x in run[name] if x[1] is None]
                    if pending:
                        pending[0][1] = cycle
                if valid and ready:
                    run[name].append([cycle, None])

    sim.add_testbench(bench)
    sim.add_process(watch)
    sim.run()
    return results, traces


def perf_engine_trace(timeline):
    """The :class:`~celosia.sim.perf.Timeline` of a run grouped like :func:`rtl_trace`:
    engine name -> ``[issue, done]`` per instruction in issue order, and the matching
    fetch-order indices."""
    from celosia.rtl.isa import Opcode

    names = {Opcode.LOAD: "load", Opcode.GEMM: "compute", Opcode.VEC: "vector", Opcode.STORE: "store"}
    out = {name: [] for name in ENGINES}
    order = sorted(range(len(timeline.issue)), key=lambda i: timeline.issue[i])
    for i in order:
        name = names.get(timeline.op[i])
        if name:
            out[name].append((i, [timeline.issue[i], timeline.done[i]]))
    return out


def first_difference(timeline, rtl_run):
    """``None`` when every instruction issues and completes in the same cycles in both;
    else a line naming the earliest-issued instruction whose cycles differ."""
    model = perf_engine_trace(timeline)
    worst = None
    for name in ENGINES:
        rtl = rtl_run[name]
        mod = model[name]
        for n, (idx, cyc) in enumerate(mod):
            got = rtl[n] if n < len(rtl) else None
            if got != cyc:
                key = cyc[0] if got is None else min(cyc[0], got[0])
                if worst is None or key < worst[0]:
                    worst = (key, f"instruction #{idx} ({name} #{n}): perf issue/done {cyc}, RTL {got}")
                break
    return None if worst is None else worst[1]


# -- differential cases -------------------------------------------------------------------

def quantized(graph, seed=0):
    """``(qmodel, x_q)``: ``graph`` quantized on 4 uniform random samples, one int8 sample."""
    import numpy as np

    from celosia.sw.quant import CalibrationWarning, quantize_graph
    import warnings

    rng = np.random.default_rng(seed)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = rng.random((4, *shape), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        q = quantize_graph(graph, x, on_degenerate="ignore")
    return q, q.quantize_input(x[:1]).reshape(1, -1)


def case_model(name):
    """A differential case by name: ``digits_mlp`` / ``digits_cnn`` / ``digits_resnet`` (the
    bundled models on a held-out image), ``tiny_cnn`` (every op: conv with padding, stride
    and groups, max / average pooling, residual add, global average pooling, fc), or
    ``conv:H,W,CIN,COUT,K,STRIDE,GROUPS`` (one random convolution layer) or ``fc:IN,OUT``;
    a suffix ``@Z`` sets every GEMM layer's ``in_zeros`` to ``Z`` (the calibration's zero
    fraction, which feie's compiler maps for: ``@0.9`` gets the mapping of sparse inputs)."""
    name, _, zeros = name.partition("@")
    if zeros:
        q, x_q = case_model(name)
        for layer in q.layers:
            if layer.is_gemm:
                layer.in_zeros = float(zeros)
        return q, x_q
    from celosia.sw import zoo
    from celosia.sw.data import digits_split
    from celosia.sw.demo import MODELS
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    if name.startswith("digits_"):
        x_train, x_test, _, _ = digits_split()
        graph = load_onnx(MODELS[name])
        shape = graph.tensors[graph.inputs[0]].shape[1:]
        x_train, x_test = x_train.reshape(-1, *shape), x_test.reshape(-1, *shape)
        q = quantize_graph(graph, x_train)
        return q, q.quantize_input(x_test[:1]).reshape(1, -1)
    if name == "tiny_cnn":
        return quantized(zoo.tiny_cnn())
    kind, _, args = name.partition(":")
    v = [int(a) for a in args.split(",")]
    if kind == "conv":
        h, w, cin, cout, k, stride, groups = v
        return quantized(zoo.conv_layer(h, w, cin, cout, k, stride=stride, groups=groups))
    if kind == "fc":
        b = zoo._Builder(f"fc{v[0]}_{v[1]}", (v[0],), 0)
        b.fc("fc", v[1])
        return quantized(b.done())
    raise ValueError(f"unknown case {name!r}")


def counter_differences(model_results, rtl_results):
    """``[(run, {counter: (perf, rtl)})]`` for each run whose counters differ, totals and
    the per-node snapshots (``"node k counter"``) alike; and where the RTL recorded
    instruction events (``trace``), ``{"events": first differing (perf, rtl)}``."""
    out = []
    for i, (p, r) in enumerate(zip(model_results, rtl_results, strict=True)):
        diff = {k: (p.counters[k], v) for k, v in r.counters.items() if p.counters[k] != v}
        if len(p.nodes) != len(r.nodes):
            diff["nodes"] = (len(p.nodes), len(r.nodes))
        for k, (pn, rn) in enumerate(zip(p.nodes, r.nodes)):
            diff.update({f"node {k} {c}": (pn.get(c), v) for c, v in rn.items() if pn.get(c) != v})
        if r.events:
            pe = p.instruction_events()
            first = next(((a, b) for a, b in zip(pe, r.events) if a != b), None)
            if first is not None or len(pe) != len(r.events):
                diff["events"] = first or (len(pe), len(r.events))
        if diff:
            out.append((i, diff))
    return out
