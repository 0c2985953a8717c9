"""Fuzz differential: the ISA simulator in the RTL's order (``celosia.sim.perf.run``, the
ISA simulator executing each instruction when the RTL issues it) against the Verilator
model, on bad programs.

Programs are (a) compiled models (a small convolution and fc layer; in the slow target the
digits MLP and CNN too) mutated:
bit flips in instruction words, one field changed through ``isa.decode`` /
``isa.encode``, token flags toggled, instructions dropped / duplicated / swapped,
descriptor words changed, stores aimed at the program; and (b) random programs from a
small grammar of legal-ish instructions, with random windows and a small watchdog and
cycle bound. Each runs on the Verilator model of one small config per dataflow (built
once, cached) through the C++ harness and on the model; they must agree
(:func:`outcome`): the same error code, ERROR_INFO, FAULT_ADDR and the whole DRAM image
after the run, and on success the same counters; or both time out.

Where instructions of different queues that touch the same buffer rows or DRAM bytes
(one writing) are in flight together (:func:`celosia.sim.perf.races`), what each reads
depends on the engines' cycle-level timing, which the ISA simulator does not model (it
executes an instruction whole when it issues): such a run is compared without its DRAM
image (error, ERROR_INFO, FAULT_ADDR; its counters when the run ends without error,
except on feie, whose timing depends on the data) and counted as ``racy``.

Default target: a few hundred cases, derandomized (the same every run). ``-m slow``:
thousands, with the counts printed::

    CELOSIA_VERILATOR_PGO=0 python -m pytest -m slow -s -p no:randomly -n 0 tests/sim/test_fuzz.py

(``CELOSIA_FUZZ_EXAMPLES`` sets the slow target's cases per test.) Cases the fuzz found
wrong once are kept below as explicit ``@example``\\ s.
"""

from __future__ import annotations

import collections
import functools
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from celosia.errors import CelosiaError  # noqa: E402
from celosia.rtl import isa  # noqa: E402
from celosia.rtl.config import AccelConfig  # noqa: E402
from celosia.rtl.dataflows import dataflow  # noqa: E402
from celosia.rtl.isa import BaseReg, Buffer, Csr, Opcode, VecMode  # noqa: E402
from celosia.sim import perf  # noqa: E402
from celosia.sim.job import Job, Run  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("CELOSIA_SKIP_VERILATOR") == "1",
                                reason="Verilator tests skipped")

DATAFLOWS = ("ws", "os", "rs", "feie")
#: DRAM of the fuzzed configs: the compiled models fit, and the whole image is cheap to read.
DRAM_BYTES = 1 << 15
#: The compiled models mutated: the default target's (small, so a case costs little) and
#: the slow target's (the digits MLP and CNN too).
SMALL_MODELS = ("conv:8,8,3,10,3,1,1", "fc:20,9")
MODELS = SMALL_MODELS + ("digits_mlp", "digits_cnn")

#: What the fuzz saw, over the session: printed by the slow target.
COUNTS = collections.Counter(dict.fromkeys(
    ("cases", "crashes", "hangs", "mismatches", "bytes written outside the window", "racy"), 0))


def config_of(dataflow: str) -> AccelConfig:
    """The fuzzed config of ``dataflow``: a 4x4 array with a 32 KiB DRAM (the whole image
    is read back after each run); its Verilator model is built once, without a profile."""
    return AccelConfig(rows=4, cols=4, dataflow=dataflow, dram_bytes=DRAM_BYTES)


@functools.cache
def compiled(dataflow: str, name: str):
    """``(job, layout, program words)`` of model ``name`` compiled for ``dataflow``: the
    driver's job, and the execution graph's descriptors and instruction words."""
    from celosia.sw.compiler import compile_model
    from celosia.sw.driver.driver import build_job
    from perf_trace import case_model

    q, x_q = case_model(name)
    program = compile_model(q, config_of(dataflow))
    job, lay, _ = build_job(program, x_q)
    return job, lay


# -- the differential --------------------------------------------------------------------

def outcome(res, racy: bool = False, data_timing: bool = False) -> tuple:
    """What the two sides must agree on for one run's result: with ``racy`` not the DRAM
    image, and not the counters either where the timing depends on the data
    (``data_timing``: feie's zero skipping)."""
    if res.timed_out:
        return ("timed out",)
    head = (res.error_name, res.error_info, res.fault_addr)
    counters = (res.counters,) if res.error == 0 and not (racy and data_timing) else ()
    return head + (() if racy else (res.data[0],)) + counters


def differential(config: AccelConfig, job: Job) -> None:
    """Run ``job`` (each run reading the whole DRAM back) on Verilator and on the model;
    assert the same outcome per run and no byte written outside the write window, and
    count it (:data:`COUNTS`)."""
    from celosia.sim import verilator

    job = Job(dram_bytes=job.dram_bytes, image=job.image, max_cycles=job.max_cycles,
              runs=[Run(csr_writes=r.csr_writes, writes=r.writes, readback=[(0, job.dram_bytes)])
                    for r in job.runs])
    rtl = verilator.run(config, job)
    COUNTS["cases"] += 1
    try:
        model = perf.run(config, job, check_races=True)
    except CelosiaError as e:      # IsaError included: a stop is a result, never raised
        COUNTS["model errors"] += 1
        raise AssertionError(f"the model raised {e!r}") from None
    except Exception:
        COUNTS["crashes"] += 1
        raise
    for i, (r, m) in enumerate(zip(rtl, model)):
        racy = bool(m.races)
        COUNTS["runs"] += 1
        COUNTS["hangs"] += r.timed_out
        COUNTS["racy"] += racy
        COUNTS[f"stop {r.error_name}"] += 1
        data_timing = config.dataflow == "feie"
        if outcome(r, racy, data_timing) != outcome(m, racy, data_timing):
            COUNTS["mismatches"] += 1
            raise AssertionError(f"run {i}: RTL {summary(r)} != model {summary(m)}")
    outside = sum(outside_writes(job, r) for r in rtl)
    COUNTS["bytes written outside the window"] += outside
    assert outside == 0, f"the RTL wrote {outside} bytes outside the write window"


def summary(res) -> str:
    return (f"{res.error_name} info={res.error_info} fault={res.fault_addr:#x} "
            f"timed_out={res.timed_out} cycles={res.counters['cycles']}")


def outside_writes(job: Job, res) -> int:
    """Bytes of the DRAM image after the run ``res`` that differ from the image before the
    job outside the write window (0 when the window is the whole DRAM): writes the
    hardware must never make. Every run of a job has the same write window (the
    driver's)."""
    regs = dict(job.runs[0].csr_writes)
    base, size = regs.get(Csr.WR_BASE, 0), regs.get(Csr.WR_SIZE, 0)
    if size == 0:
        return 0
    before = bytearray(job.dram_bytes)
    for a, p in job.image:
        before[a:a + len(p)] = p
    after = res.data[0]
    return sum(1 for a in range(len(after)) if after[a] != before[a] and not base <= a < base + size)


# -- (a) mutated compiled programs ----------------------------------------------------------

def program_slots(image: bytes, prog_base: int):
    """The execution graph at ``prog_base`` in ``image``: ``[(descriptor address, insn_offset,
    n_insn)]``, the end marker excluded."""
    out, i = [], 0
    while True:
        at = prog_base + isa.DESC_BYTES * i
        d = isa.unpack_bytes(isa.NodeDescriptor, image[at:at + isa.DESC_BYTES])
        if d["n_insn"] == 0:
            return out
        out.append((at, d["insn_offset"], d["n_insn"]))
        i += 1


#: The layout of each opcode's instruction.
LAYOUTS = {Opcode.LOAD: isa.LoadInsn, Opcode.GEMM: isa.GemmInsn, Opcode.STORE: isa.StoreInsn,
           Opcode.VEC: isa.VecInsn, Opcode.NOP: isa.Header}


def set_field(word: int, layout, name: str, value: int) -> int:
    """``word`` with field ``name`` of ``layout`` set to the raw bits ``value`` (modulo its
    width: any value, one an enum does not name included)."""
    f = dict(layout)[name]
    mask = ((1 << f.width) - 1) << f.offset
    return (word & ~mask) | ((value << f.offset) & mask)


def _word(img, a):
    return int.from_bytes(img[a:a + isa.INSN_BYTES], "little")


def _put(img, a, w):
    img[a:a + isa.INSN_BYTES] = (w & ((1 << 256) - 1)).to_bytes(isa.INSN_BYTES, "little")


MUTATIONS = ("bit", "field", "token", "drop", "dup", "swap", "desc", "store_to_program")


@st.composite
def mutations(draw):
    """A list of (kind, parameters) mutations, resolved against a program by
    :func:`mutate` (indices are taken modulo what the program has)."""
    n = draw(st.integers(1, 3))
    return [(draw(st.sampled_from(MUTATIONS)), draw(st.integers(0, 1 << 16)),
             draw(st.integers(0, 255)), draw(st.integers(0, (1 << 32) - 1))) for _ in range(n)]


def mutate(image: bytearray, lay: dict, muts) -> bytearray:
    """Apply ``muts`` to the execution graph in ``image``, in place (each mutation's index
    is taken modulo the program's instructions, so every draw names one)."""
    prog = lay["program"]
    nodes = program_slots(image, prog)
    insns = [prog + off + isa.INSN_BYTES * j for _, off, n in nodes for j in range(n)]
    for kind, i, bit, value in muts:
        a = insns[i % len(insns)]
        w = _word(image, a)
        if kind == "bit":
            _put(image, a, w ^ (1 << bit))
        elif kind == "token":
            _put(image, a, w ^ (1 << (4 + bit % 4)))
        elif kind == "field":
            d = isa.decode(w)
            if d.get("illegal"):
                continue
            names = [f for f in d if f not in ("op", "dep")]
            if names:
                # decoded, one field changed, encoded again
                _put(image, a, set_field(w, LAYOUTS[d["op"]], names[bit % len(names)], value))
        elif kind == "swap":
            b = insns[(i + 1 + bit) % len(insns)]
            wb = _word(image, b)
            _put(image, a, wb)
            _put(image, b, w)
        elif kind in ("drop", "dup"):
            # within the node: the later instructions move up (drop, n_insn - 1) or down
            # (dup, the node's last one falls off)
            k = next((k for k, (_, off, n) in enumerate(nodes)
                      if prog + off <= a < prog + off + n * isa.INSN_BYTES), None)
            if k is None:          # dropped already
                continue
            at, off, n = nodes[k]
            end = prog + off + n * isa.INSN_BYTES
            if kind == "drop":
                image[a:end] = image[a + isa.INSN_BYTES:end] + bytes(isa.INSN_BYTES)
                desc = isa.unpack_bytes(isa.NodeDescriptor, image[at:at + isa.DESC_BYTES])
                image[at:at + isa.DESC_BYTES] = isa.encode_descriptor(
                    off, n - 1, desc["kind"]).to_bytes(isa.DESC_BYTES, "little")
                nodes[k] = (at, off, n - 1)
            else:
                image[a:end] = (image[a:a + isa.INSN_BYTES] + image[a:end])[:end - a]
        elif kind == "desc":
            at = nodes[i % len(nodes)][0] if bit % 2 else prog + isa.DESC_BYTES * (i % (len(nodes) + 1))
            v = int.from_bytes(image[at:at + 8], "little")
            v ^= (1 << (bit % 64)) if bit % 4 else (value << 32 if bit % 8 else value)
            image[at:at + 8] = (v & ((1 << 64) - 1)).to_bytes(8, "little")
        elif kind == "store_to_program":
            d = isa.decode(w)
            if d.get("op") != Opcode.STORE:
                stores = [x for x in insns if isa.decode(_word(image, x)).get("op") == Opcode.STORE]
                if not stores:
                    continue
                a = stores[i % len(stores)]
                d = isa.decode(_word(image, a))
            d.update(base_reg=BaseReg.PROGRAM, dram_offset=value % (lay["static"] - lay["program"]),
                     to_buf=0)
            _put(image, a, isa.encode(d.pop("op"), **d))
    return image


def mutated_job(dataflow, name, muts) -> Job:
    job, lay = compiled(dataflow, name)
    image = bytearray(job.dram_bytes)
    for a, p in job.image:
        image[a:a + len(p)] = p
    mutate(image, lay, muts)
    return Job(dram_bytes=job.dram_bytes, image=[(0, bytes(image))], runs=job.runs,
               max_cycles=job.max_cycles)


class FuzzJob(Job):
    """A :class:`Job` that Hypothesis shows by its program (not its DRAM image)."""

    def __repr__(self):
        regs = {getattr(a, "name", a): v for a, v in self.runs[0].csr_writes}
        return f"FuzzJob({self.program}, csrs={regs})"


# -- (b) random programs -----------------------------------------------------------------

def _dep(draw):
    return {f: draw(st.integers(0, 1)) if draw(st.integers(0, 3)) == 0 else 0
            for f in ("pop_prev", "pop_next", "push_prev", "push_next")}


@st.composite
def random_insn(draw, config: AccelConfig):
    """One legal-ish instruction: fields mostly in range, sometimes just past it."""
    small = st.integers(0, 6)
    op = draw(st.sampled_from((Opcode.LOAD, Opcode.LOAD, Opcode.GEMM, Opcode.STORE, Opcode.VEC,
                               Opcode.NOP)))
    dep = _dep(draw)
    if op == Opcode.LOAD:
        buf = draw(st.sampled_from((Buffer.IFMAP, Buffer.WEIGHT, Buffer.PARAM, 3)))
        f = dict(base_reg=draw(st.integers(0, 7)), dram_offset=draw(st.integers(0, 4096)),
                 n0=draw(st.integers(0, 5)), n1=draw(small), n2=draw(st.integers(0, 3)),
                 dram_stride0=draw(st.integers(0, 2)), dram_stride1=draw(st.integers(0, 64)),
                 dram_stride2=draw(st.integers(0, 256)), buf_row=draw(st.integers(0, 40)),
                 buf_stride1=draw(st.integers(0, 3)), buf_stride2=draw(st.integers(0, 8)),
                 lane0=draw(st.integers(0, 4)), pad_en=draw(st.integers(0, 1)),
                 pad_lo1=draw(st.integers(0, 2)), pad_hi1=draw(small), pad_lo2=draw(st.integers(0, 2)),
                 pad_hi2=draw(small), pad_value=draw(st.integers(-128, 127)))
        if draw(st.integers(0, 7)) == 0:      # "runs forever": n1 = n2 = 65535, zero strides
            f.update(n1=65535, n2=65535, dram_stride1=0, dram_stride2=0, buf_stride1=0, buf_stride2=0)
        return set_field(isa.encode(op, dep=dep, **f), isa.LoadInsn, "buf", getattr(buf, "value", buf))
    if op == Opcode.GEMM:
        # the "row" engine (feie) takes several taps with dil_w = stride_w (phase sets)
        phase_sets = dataflow(config.dataflow).gemm_window == "row"
        window = draw(st.integers(0, 1))
        m_len = draw(st.integers(0, 8))
        f = dict(accumulate=draw(st.integers(0, 1)), window=window, ifmap_row=draw(st.integers(0, 16)),
                 weight_row=draw(st.integers(0, 16)), psum_row=draw(st.integers(0, 16)), m_len=m_len,
                 k_len=draw(st.integers(0, 5)), n_len=draw(st.integers(0, 5)), win_h=draw(st.integers(0, 2)),
                 win_w=draw(st.integers(0, 2)), stride_h=draw(st.integers(1, 2)), stride_w=draw(st.integers(1, 2)),
                 dil_h=1, dil_w=draw(st.integers(1, 2)) if phase_sets else 1,
                 row_pitch=draw(st.integers(1, 4)), out_w=draw(st.integers(1, 3)),
                 out_h=draw(st.integers(1, 3)), in_zp=draw(st.integers(-3, 3)))
        return isa.encode(op, dep=dep, **f)
    if op == Opcode.STORE:
        f = dict(base_reg=draw(st.integers(0, 7)), dram_offset=draw(st.integers(0, 4096)),
                 m_len=draw(st.integers(0, 5)), n_len=draw(st.integers(0, 5)),
                 dram_stride=draw(st.integers(0, 64)), psum_row=draw(st.integers(0, 20)),
                 param_row=draw(st.integers(0, 8)), to_buf=draw(st.integers(0, 1)),
                 buf_row=draw(st.integers(0, 20)), buf_stride=draw(st.integers(0, 3)),
                 lane0=draw(st.integers(0, 4)), out_zp=draw(st.integers(-5, 5)),
                 act_min=-128, act_max=127)
        return isa.encode(op, dep=dep, **f)
    if op == Opcode.VEC:
        mode = draw(st.sampled_from((VecMode.MAX, VecMode.SUM, VecMode.ADD, 3)))
        f = dict(m_len=draw(st.integers(0, 5)), win=draw(st.integers(0, 3)),
                 lanes=draw(st.integers(0, 5)), ifmap_row=draw(st.integers(0, 16)),
                 psum_row=draw(st.integers(0, 16)), in_zp=draw(st.integers(-3, 3)))
        return set_field(isa.encode(op, dep=dep, **f), isa.VecInsn, "mode", getattr(mode, "value", mode))
    return isa.encode(op, dep=dep)


#: Where random programs find their data, and the base register values they draw from.
DATA, DATA_BYTES = 0x1000, 0x2000
BASES = (0, DATA, DATA + 0x800, 0x3000, DRAM_BYTES - 64, DRAM_BYTES)


@st.composite
def random_job(draw, config: AccelConfig) -> Job:
    """A random program of 1 to 12 instructions in one or two nodes, at PROG_BASE 0 (or a
    misaligned one), random data, random read / write windows, a small watchdog or none,
    and a harness bound of 40,000 cycles."""
    insns = draw(st.lists(random_insn(config), min_size=1, max_size=12))
    split = draw(st.integers(0, len(insns)))
    seed = draw(st.integers(0, 1 << 30))
    return program_job([n for n in (insns[:split], insns[split:]) if n],
                       prog_base=draw(st.sampled_from((0, 0, 0, 0, 4, 0x200))),
                       read=draw(st.sampled_from(((0, 0), (0, 0x4000), (0, DATA + DATA_BYTES),
                                                  (0x10, 0x3000)))),
                       write=draw(st.sampled_from(((0, 0), (DATA + 0x800, 0x1000), (0, 0x400)))),
                       watchdog=draw(st.sampled_from((0, 300, 2000))),
                       bases=[draw(st.sampled_from(BASES)) for _ in range(isa.NUM_BASE_REGS)],
                       data=bytes((seed * 2654435761 + 97 * i) >> 7 & 0xFF for i in range(DATA_BYTES)))


def program_job(nodes, prog_base=0, read=(0, 0), write=(0, 0), watchdog=0, bases=(),
                data=b"", max_cycles=40_000) -> FuzzJob:
    """The job of one run of ``nodes`` (lists of instruction words) at ``prog_base``: the
    descriptor table, the instructions after it, ``data`` at :data:`DATA`; the windows
    ``(base, size)``, the WATCHDOG CSR, base registers ``bases``, the harness bound."""
    table = isa.DESC_BYTES * (len(nodes) + 1)
    first = -(-table // isa.INSN_BYTES) * isa.INSN_BYTES
    prog, off = bytearray(), first
    for k, node in enumerate(nodes):
        prog += isa.encode_descriptor(off, len(node), k).to_bytes(8, "little")
        off += isa.INSN_BYTES * len(node)
    prog += bytes(8)
    prog = prog.ljust(first, b"\0") + b"".join(w.to_bytes(isa.INSN_BYTES, "little")
                                               for node in nodes for w in node)
    image = bytearray(DRAM_BYTES)
    image[prog_base:prog_base + len(prog)] = prog
    image[DATA:DATA + len(data)] = data
    regs = [(Csr.PROG_BASE, prog_base), (Csr.WINDOW_BASE, read[0]), (Csr.WINDOW_SIZE, read[1]),
            (Csr.WR_BASE, write[0]), (Csr.WR_SIZE, write[1]), (Csr.WATCHDOG, watchdog)]
    regs += [(Csr.BASE0 + r, b) for r, b in enumerate(bases)]
    job = FuzzJob(dram_bytes=DRAM_BYTES, image=[(0, bytes(image))],
                  runs=[Run(csr_writes=regs, readback=[])], max_cycles=max_cycles)
    job.program = [[isa.decode(w) for w in node] for node in nodes]
    return job


# -- the tests ----------------------------------------------------------------------------

#: Cases per test in the default target (8 tests: a few hundred in all), and in ``-m slow``.
DEFAULT_EXAMPLES = 30
SLOW_EXAMPLES = int(os.environ.get("CELOSIA_FUZZ_EXAMPLES", "600"))


def _settings(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def _mutated(dataflow, name, muts):
    differential(config_of(dataflow), mutated_job(dataflow, name, muts))


def _random(dataflow, data):
    config = config_of(dataflow)
    differential(config, data.draw(random_job(config)))


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@_settings(DEFAULT_EXAMPLES)
@given(name=st.sampled_from(SMALL_MODELS), muts=mutations())
# found by the slow target: two instructions dropped leave a LOAD racing the GEMMs that read
# its rows; on feie the zero skipping (the timing) then depends on the race
@example(name="digits_cnn", muts=[("drop", 1000, 0, 0), ("drop", 4067, 0, 0), ("bit", 192, 0, 0)])
def test_mutated_programs(dataflow, name, muts):
    _mutated(dataflow, name, muts)


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@_settings(DEFAULT_EXAMPLES)
@given(data=st.data())
def test_random_programs(dataflow, data):
    _random(dataflow, data)


@pytest.mark.slow
@pytest.mark.parametrize("dataflow", DATAFLOWS)
@_settings(SLOW_EXAMPLES)
@given(name=st.sampled_from(MODELS), muts=mutations())
def test_mutated_programs_long(dataflow, name, muts):
    _mutated(dataflow, name, muts)


@pytest.mark.slow
@pytest.mark.parametrize("dataflow", DATAFLOWS)
@_settings(SLOW_EXAMPLES)
@given(data=st.data())
def test_random_programs_long(dataflow, data):
    _random(dataflow, data)


@pytest.fixture(scope="module", autouse=True)
def _print_counts():
    yield
    if COUNTS["cases"]:
        print("\nfuzz counts: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


# -- explicit cases: each stop the RTL makes, and what the fuzz found -----------------------

def _load(**f):
    return isa.encode(Opcode.LOAD, **dict(dict(buf=Buffer.IFMAP, n0=4, n1=1, n2=1), **f))


def _nop(**dep):
    return isa.encode(Opcode.NOP, dep=dep)


def _store(**f):
    return isa.encode(Opcode.STORE, **dict(dict(m_len=1, n_len=4, act_min=-128, act_max=127), **f))


FOREVER = _load(n0=1, n1=65535, n2=65535)     # zero strides: "runs forever"


@pytest.mark.parametrize("case, nodes, csrs, stop", [
    ("256 tokens", [[_nop(push_next=1)] * 256], {}, ("TOKEN_OVERFLOW", 255)),
    ("9 LOADs waiting on later NOPs", [[_load(dep={"pop_next": 1})] * 9 + [_nop(push_prev=1)] * 9],
     {}, ("TOKEN_DEADLOCK", 0)),
    ("illegal opcode", [[_nop(), _nop(), 0xF]], {}, ("ILLEGAL_OPCODE", 2)),
    # the queues are empty when it trips: ERROR_INFO is the next instruction, 3
    ("forever LOAD, watchdog", [[_nop(), FOREVER, _nop()]], {"watchdog": 300}, ("WATCHDOG", 3)),
    ("forever LOAD, no watchdog", [[FOREVER]], {}, "timed out"),
    # not a deadlock: the LOAD engine is busy while the next LOAD waits for it
    ("forever LOAD, another waiting", [[FOREVER, _load()]], {}, "timed out"),
    ("misaligned PROG_BASE", [[_nop()]], {"prog_base": 4}, ("BAD_DESCRIPTOR", 0, 4)),
    ("descriptor outside the window", [[_nop()]], {"prog_base": 0x200, "read": (0x40, 0x100)},
     ("BAD_DESCRIPTOR", 0, 0x200)),
    ("store outside the write window", [[_store(dram_offset=0x100)]], {"write": (0x2000, 0x100)},
     ("DMA_OUT_OF_WINDOW", 0, 0x100)),
    # stores over the program's own next instructions before fetch reaches them (the
    # second node's first instruction becomes the stored bytes: zero, a NOP)
    ("self-modifying", [[_store(dram_offset=0x40 + 32 * 60, n_len=4, m_len=8, dram_stride=4)],
                        [_nop()] * 60 + [0xF]], {}, ("NONE", 0)),
])
def test_rtl_stops(case, nodes, csrs, stop):
    """Each stop of the RTL (and a self-modifying program) on Verilator and the model: the
    same outcome, and the one worked out by hand (``stop``: (error, ERROR_INFO[, FAULT_ADDR])
    or "timed out"). The self-modifying program stores zeros (a NOP) over its illegal last
    instruction long before fetch reaches it, so it ends without error."""
    job = program_job(nodes, **csrs, max_cycles=20_000)
    differential(config_of("ws"), job)
    if stop is not None:
        (res,) = perf.run(config_of("ws"), job)
        got = "timed out" if res.timed_out else (res.error_name, res.error_info, res.fault_addr)
        assert got == stop if stop == "timed out" or len(stop) == 3 else got[:2] == stop
