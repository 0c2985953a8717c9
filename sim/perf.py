"""``perf``: a cycle model of the whole accelerator that gives the RTL's cycles exactly.

The model runs a :class:`~celosia.sim.job.Job` like the RTL back ends (``pysim``,
``verilator``) and returns the same :class:`~celosia.sim.job.RunResult` per run: the
outputs (computed by the ISA simulator, :class:`~celosia.sim.isa_sim.IsaSim`, executing
each instruction when the model issues it) and every counter the hardware reads back
(:data:`celosia.sim.job.COUNTERS`), plus the counters at each node boundary
(``nodes``, as the harnesses record them) and each instruction's issue / done cycles.

What it models, each part by the timing its RTL docstring gives (and, where one exists,
the executable timing function next to the component):

* **Fetch** (``rtl/controller/fetch.py``): descriptor read ahead, one word request per
  bus grant, the word FIFO's room (:func:`~celosia.rtl.controller.fetch.fetch_words`),
  the 4-word assembler and the push into the queue its opcode selects (it waits while
  that queue is full).
* **Dispatch** (``rtl/controller/dispatch.py``): the three ``SyncFIFOBuffered`` queues
  of ``queue_depth`` (two cycles from a push to the head), the token counters
  l2c / c2l / c2s / s2c (a pop at issue, a push the cycle after ``done``), the compute
  queue feeding GEMMs to the PE array and VECs to the vector engine in order, NOPs, the
  in-flight GEMM FIFO.
* **Bus** (``rtl/dram.py``): the round-robin :class:`~celosia.rtl.dram.BusArbiter`
  (fetch client 0, LOAD 1, STORE 2), the DRAM's request interval
  (:func:`~celosia.rtl.dram.request_interval`) and read latency.
* **DMA** (``rtl/dma.py``): a LOAD's requests (:func:`~celosia.rtl.dma.load_plan`,
  one per cycle, reads when the bus grants them, pads straight away, the in-flight FIFO),
  a STORE's PPU chunks (:func:`~celosia.rtl.dma.store_plan`) of which the one that
  fills a bus word or ends a run waits for its bus grant, stalling the PPU.
* **Compute**: the PE array of each dataflow (``ws`` shadow weights and psum hazards,
  ``os`` block pipeline, ``rs`` one GEMM at a time with the registry's ``cycles``;
  ``feie`` the next GEMM taken while one runs, :class:`~celosia.rtl.arrays.feie.FEIETiming`,
  from the ifmap buffer's data through :func:`~celosia.rtl.arrays.feie.row_trace`), the
  vector engine
  (:func:`~celosia.rtl.vector.vec_cycles`).

It works at event level: a heap of the cycles at which something can change (a bus
grant, a response, an issue, a ``done``, an epoch boundary, a token arriving); cycles in
between are skipped, so the cost is per instruction and per bus request, not per cycle.
Where only the timing is modelled, :mod:`celosia.sim.perf_jump` replays the stretches from
one instruction's push to the next whose machine state and instructions repeat an earlier
one's instead of stepping through them again (``run(..., jump=False)`` steps through all).
docs/perf.md describes the model, its exactness guarantee and its tests.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import heapq
import mmap
import os
from collections import deque
from dataclasses import dataclass, field

from celosia.errors import IsaError
from celosia.rtl import isa
from celosia.rtl.arrays.engine import legal_gemm
from celosia.rtl.arrays.feie import FEIETiming, row_trace
from celosia.rtl.arrays.rs import RSTiming
from celosia.rtl.arrays.os import OSTiming, dense_steps
from celosia.rtl.arrays.ws import WSTiming
from celosia.rtl.config import AccelConfig
from celosia.rtl.controller.fetch import FIRST_REQUEST, fetch_words
from celosia.rtl.controller.dispatch import DEADLOCK_CYCLES, TOKEN_MAX
from celosia.rtl.controller.signatures import GEMMS_IN_FLIGHT
from celosia.rtl.dataflows import dataflow
from celosia.rtl.dma import load_plan, store_plan
from celosia.rtl.dram import request_interval
from celosia.rtl.isa import Csr, Opcode
from celosia.rtl.ppu import LATENCY as PPU_LATENCY
from celosia.rtl.vector import vec_cycles
from celosia.sim.isa_sim import IsaSim
from celosia.sim.job import COUNTERS, POLL_CYCLES, Job, RunResult
from celosia.sim.perf_jump import Jump

__all__ = ["run", "simulate", "PerfResult", "Timeline", "CounterLog"]

#: Queue of each opcode (dispatch order LOAD 0, COMPUTE 1, STORE 2).
_QUEUE = {Opcode.LOAD: 0, Opcode.GEMM: 1, Opcode.VEC: 1, Opcode.NOP: 1, Opcode.STORE: 2}
_FETCH, _LOAD, _STORE = 0, 1, 2   # bus clients (rtl/top.py)
#: The counters that count events (the others count busy cycles).
_EVENTS = ("macs", "dram_bytes_read", "dram_bytes_written", "insns", "zero_skips", "mac_cycles")
#: The tokens each queue's instructions push at ``done``: (flag, counter).
_PUSHES = {0: (("push_next", "l2c"),), 1: (("push_prev", "c2l"), ("push_next", "c2s")),
           2: (("push_prev", "s2c"),)}
#: The tokens each queue's instructions pop: (flag, counter).
_POPS = {0: (("pop_next", "c2l"),), 1: (("pop_prev", "l2c"), ("pop_next", "s2c")),
         2: (("pop_prev", "c2s"),)}
#: The counters in the order the RTL gives an overflow's ERROR_INFO priority.
_TOKEN_ORDER = ("l2c", "c2l", "c2s", "s2c")


@dataclass
class Timeline:
    """Per instruction (fetch order): ``issue`` and ``done`` cycles (counted from the
    ``CTRL`` write as cycle 0), its queue (0 LOAD, 1 COMPUTE, 2 STORE) and its node."""
    issue: list = field(default_factory=list)
    done: list = field(default_factory=list)
    queue: list = field(default_factory=list)
    node: list = field(default_factory=list)
    op: list = field(default_factory=list)
    #: ``(cycle, client)`` of every bus grant (0 fetch, 1 LOAD, 2 STORE)
    grants: list = field(default_factory=list)


@dataclass
class PerfResult(RunResult):
    """A :class:`~celosia.sim.job.RunResult` with the ``timeline`` of its instructions, its
    :class:`CounterLog` (``log``); :func:`run` fills ``nodes`` (:meth:`node_snapshots`)."""
    timeline: Timeline | None = None
    log: object = None
    #: with ``check_races``: the instruction pairs whose data depends on cycle-level
    #: timing (:func:`races`); its outputs may then differ from the RTL's
    races: list = field(default_factory=list)
    #: the instruction-to-instruction segments the run replayed instead of stepping
    #: through (:mod:`celosia.sim.perf_jump`; 0 without the jump)
    jumped: int = 0

    def node_snapshots(self) -> list[dict]:
        """The per-node snapshots as the hardware's controller records them
        (:attr:`RunResult.nodes <celosia.sim.job.RunResult.nodes>`): one per node (a run
        of consecutive descriptors of one kind), ``{"index": k + 1, counter: value at its
        boundary}``."""
        return [{"index": k + 1, **self.log.at(b)} for k, b in enumerate(self.log.bounds)]

    def instruction_events(self) -> list[tuple[int, int, int]]:
        """The instruction events as the C++ harness records them with ``trace``
        (:attr:`RunResult.events <celosia.sim.job.RunResult.events>`): ``(cycle, issue,
        fin)`` for every cycle in which an instruction started or completed, ``issue`` /
        ``fin`` masks per queue (bit 0 LOAD, 1 COMPUTE, 2 STORE). The harness stamps an
        event with the CYCLES counter's value in that cycle, which counts the cycles
        before it: one less than the timeline's cycle (counted from the ``CTRL`` write)."""
        tl, masks = self.timeline, {}
        for q, start, end in zip(tl.queue, tl.issue, tl.done):
            if start is not None:        # (a run cut short leaves some not issued / done)
                masks.setdefault(start - 1, [0, 0])[0] |= 1 << q
            if end is not None:
                masks.setdefault(end - 1, [0, 0])[1] |= 1 << q
        return [(c, a, b) for c, (a, b) in sorted(masks.items())]


class _Queue:
    """A ``SyncFIFOBuffered`` of ``depth`` (>= 2): an inner FIFO of ``depth - 1`` plus the
    output register; an entry written in cycle ``W`` is read from the inner FIFO in
    ``R = max(W + 1, I_prev)`` (``I_prev``: the issue of the entry before) and is the head
    from ``R + 1``."""

    def __init__(self, depth):
        self.inner = depth - 1
        self.W, self.R, self.items = [], [], []
        self.issued = 0                       # entries issued (index of the head)
        self.last_issue = None

    def w_rdy(self, c):
        inner_level = len(self.W) - bisect.bisect_left(self.R, c)
        return inner_level < self.inner

    def head(self, c):
        """The head entry if it is valid in cycle ``c``, else None."""
        j = self.issued
        if j < len(self.R) and self.R[j] + 1 <= c:
            return self.items[j]
        return None

    def empty(self):
        return self.issued == len(self.W)

    def push(self, c, item, wake):
        self.W.append(c)
        self.items.append(item)
        j = len(self.W) - 1
        if j == self.issued:              # the head (or the entry after the one in the register)
            self._read(j, c, wake)

    def _read(self, j, c_known, wake):
        prev = self.last_issue            # None: nothing issued yet
        r = self.W[j] + 1 if prev is None else max(self.W[j] + 1, prev)
        if len(self.R) == j:
            self.R.append(r)
            wake(r)
            wake(r + 1)

    def issue(self, c, wake):
        self.issued += 1
        self.last_issue = c
        j = self.issued
        if j < len(self.W) and len(self.R) == j:
            self._read(j, c, wake)


class _Tokens:
    """The four token counters: changes take effect in a given cycle."""

    def __init__(self):
        self.value = {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}
        self.pending = []                 # heap of (cycle, name, delta, pushing instruction)
        self.changed = 0                  # the last cycle a counter changed

    def change(self, at, name, delta, wake, idx=None):
        """``name`` changes by ``delta`` from cycle ``at`` (a pop at issue, a push by
        instruction ``idx`` at its ``done``)."""
        heapq.heappush(self.pending, (at, name, delta, idx))
        wake(at)

    def advance(self, c, stops):
        """Apply the changes due by cycle ``c``. A push into a counter at TOKEN_MAX without
        a pop in the same cycle is TOKEN_OVERFLOW in the push's cycle (``c - 1``), added to
        ``stops``; the counter stays."""
        net = {}
        while self.pending and self.pending[0][0] <= c:
            _, name, delta, idx = heapq.heappop(self.pending)
            n = net.setdefault(name, [0, None])
            n[0] += delta
            if delta > 0:
                n[1] = idx
        for name in _TOKEN_ORDER:
            if name in net:
                self.changed = c
                delta, idx = net[name]
                if delta > 0 and self.value[name] == TOKEN_MAX:
                    stops.append((c - 1, 3, isa.ErrorCode.TOKEN_OVERFLOW, idx, 0))
                else:
                    self.value[name] += delta


#: feie timings already computed: (the GEMM's fields that row_trace reads, a digest of the
#: ifmap buffer's bytes) -> RowTrace. The weights (weight_row) and where the psums go
#: (psum_row, accumulate) do not change the timing, so the tiles of one layer's output
#: channels over the same inputs share one trace.
_FEIE_CACHE: dict = {}
_FEIE_IGNORED = ("op", "dep", "weight_row", "psum_row", "accumulate")


def _feie_trace(d, g, config, ifmap, start=2):
    """:func:`~celosia.rtl.arrays.feie.row_trace` of the GEMM ``d`` (``g``: its
    :func:`legal_gemm`) on ``ifmap``, its groups starting in cycle ``start``, cached."""
    if g is None:
        return row_trace(d, config, ifmap, start=start)
    key = (config, start, tuple(v for k, v in d.items() if k not in _FEIE_IGNORED),
           hashlib.blake2b(ifmap.tobytes(), digest_size=16).digest())
    tr = _FEIE_CACHE.get(key)
    if tr is None:
        if len(_FEIE_CACHE) > 4096:
            _FEIE_CACHE.clear()
        tr = _FEIE_CACHE[key] = row_trace(d, config, ifmap, start=start)
    return tr


class _Machine:
    """One run of the accelerator (see the module docstring)."""

    def __init__(self, config: AccelConfig, sim: IsaSim, prog_base: int, memo: dict | None = None,
                 log_grants=False, watchdog: int = 0, limit: int | None = None, jump: bool = False):
        self.cfg = config
        self.jumps = jump and not log_grants and config.dataflow != "feie"
        self.log_grants = log_grants
        self.sim = sim
        self.prog_base = prog_base
        self.memo = {} if memo is None else memo
        self.watchdog = watchdog
        self.limit = limit
        self.insns = []                     # decoded, in fetch order, as fetch assembles them
        self.node_of = []
        self.pops = []                      # per instruction: the token counters it pops
        self.L = config.dram_latency
        self.k = request_interval(config)
        self.df = config.dataflow
        self.taps = dataflow(config.dataflow).macs_count_taps
        self.heap = []
        self.queued = set()
        self.now = -1
        self.tl = Timeline()
        #: the stop: ``(cycle, priority, code, info, fault address)`` candidates (the RTL's
        #: first cause in a cycle wins: LOAD, compute, STORE, overflow, fetch, deadlock,
        #: watchdog), and the one that ended the run
        self.stops = []
        self.stopped = None
        self.timed_out = False
        self.fails = {}                     # instruction -> (code, fault address) of its error
        self.fin_cycles = set()             # cycles with a completion (progress)
        self.last_progress = 0              # run.start clears the watchdog's idle count
        # events for the counters: (cycle, value)
        # event counters: events not yet folded (heap of (cycle, name, value)), the folded
        # totals, and the totals at each descriptor's boundary
        self.future = []
        self.tot = dict.fromkeys(_EVENTS, 0)
        self.desc_snaps = []                # (boundary cycle, event totals at its end)
        self.busy = {"load": [], "pe": [], "vec": [], "store": []}   # intervals [lo, hi]

    # -- helpers ------------------------------------------------------------------
    def wake(self, c):
        if c > self.now and c not in self.queued:
            self.queued.add(c)
            heapq.heappush(self.heap, c)

    def ev_add(self, name, c, value):
        """An event counter adds ``value`` in cycle ``c`` (at the earliest the current one)."""
        if value:
            heapq.heappush(self.future, (c, name, value))

    def _fold(self, upto):
        """Add the events of cycles up to ``upto`` to the totals."""
        future, tot = self.future, self.tot
        while future and future[0][0] <= upto:
            _, name, value = heapq.heappop(future)
            tot[name] += value

    def _snapshots(self, c):
        """In a step of cycle ``c``, before anything of it is recorded: the event totals at
        each descriptor boundary ``B < c`` whose instructions are all done-known (every
        event of a cycle is recorded at the latest in that cycle, none before the previous
        step's cycle is folded)."""
        left, snaps = self.desc_left, self.desc_snaps
        while len(snaps) < len(left) and left[len(snaps)] == 0:
            k = len(snaps)
            bound = max(self.desc_max[k], snaps[-1][0] if snaps else 0)
            if bound >= c:
                break
            self._fold(bound)
            snaps.append((bound, dict(self.tot)))
        self._fold(c - 1)

    def finish(self, idx, c):
        self.tl.done[idx] = c

    # -- the run -------------------------------------------------------------------
    def run(self):
        """Run until the machine finishes or stops; returns the last cycle (``self.stopped``
        holds the stop, ``self.timed_out`` says the harness's bound came first)."""
        cfg, L = self.cfg, self.L
        wake = self.wake
        self.queues = [_Queue(cfg.queue_depth) for _ in range(3)]
        self.tok = _Tokens()
        # bus
        self.dram_free = 0
        self.rr_last = 2
        # fetch
        self.f_desc_idx = 0                 # the next descriptor to request
        self.f_desc_pending = False
        self.f_desc_resp = None
        self.f_slot = None                  # the descriptor read ahead (its fields)
        self.f_req_addr = 0                 # byte address of the next word to request
        self.f_insn_ok = False              # the node's insn_offset is 32-aligned
        self.f_block_ok = False             # ... and its whole block may be read
        self.f_desc_ok = {}                 # descriptor index -> fetch may read it
        self.f_insn_taken = 0               # instructions of the descriptors taken
        self.f_node_first = self.f_node_n = self.f_node_base = 0
        self.f_req_err = False              # the request side refused an address
        self.f_fault = 0                    # ... this one
        self.f_words = []                   # the words in the assembler
        self.f_words_node = -1              # ... their descriptor
        self.f_blocked_at = None            # the cycle push waits from for room
        self.f_node = -1                    # the descriptor (with instructions) being requested
        self.f_slot_from = None
        self.f_node_left = 0
        self.f_req_word = 0
        self.f_req_end = False
        self.f_end_at = None                # first cycle req_end is set
        self.f_words_req = 0
        self.f_arr = deque()                # (arrival, word, descriptor) of requested, untaken words
        self.f_taken = 0
        self.f_count = 0                    # words in the assembler
        self.f_dec = None                   # ... decoded, once all four are there
        self.f_insn = 0                     # next instruction index to assemble / push
        self.f_last_push = None
        self.f_depth = fetch_words(cfg)
        # load
        self.l_reqs = None
        self.l_i = 0
        self.l_pops = deque()
        self.l_run_from = None
        self.l_last_pop = None
        self.l_idx = None
        self.l_accept = None
        self.l_ready_at = 0
        self.l_forever = False              # a LOAD busy past the harness's bound
        # store
        self.s_ready_at = 0
        self.s_want = None
        self.s_flushes = None
        self.s_fi = 0
        self.s_T = 0
        self.s_idx = None
        self.s_accept = None
        # compute
        self.g_accepts, self.g_ends = [], []   # GEMMs accepted / their ends (None: unknown)
        self.g_idx = []
        self.v_end = -1
        self.v_accept = None
        self.nop_at = None
        self._engine_init()
        wake(FIRST_REQUEST)
        wake(1)
        self.last_done = 0
        self.n_done = 0
        self.desc_left = []                 # instructions per descriptor without a done yet
        self.desc_max = []
        self.desc_kind = None               # the kind of the last descriptor taken
        self.desc_ends = []                 # whether it ends a node (the next one taken has
        # another kind, or is the end marker: fetch's node boundaries, rtl/controller/fetch.py)
        self.fin_heap = []                  # completion cycles not yet counted as progress
        jump = self.jump = Jump(self) if self.jumps else None
        while True:
            c = self._next()
            if c is None:
                return self.stopped[0]
            heapq.heappop(self.heap)
            self.queued.discard(c)
            self.now = c
            pushed = self.f_insn
            if self.step(c):
                if self.stopped is None and self.limit is not None and c > self.limit:
                    self.timed_out = True
                return c if self.stopped is None else self.stopped[0]
            if jump is not None and self.f_insn != pushed:
                jump.at_push(c)

    # -- stops ------------------------------------------------------------------------
    def _end(self, cycle, code, info, addr=0):
        """The machine stops in ``cycle`` (its STATUS is set the next): ``code``, ERROR_INFO
        ``info``, FAULT_ADDR ``addr``; past the harness's bound it has timed out first."""
        if self.limit is not None and cycle > self.limit:
            self.timed_out = True
        self.stopped = (cycle, int(code), info, addr & 0xFFFFFFFF)

    def _oldest(self, c):
        """The oldest valid queue head in cycle ``c`` (ERROR_INFO of a deadlock or the
        watchdog), else the next instruction fetch pushes."""
        heads = [idx for idx in (q.head(c) for q in self.queues) if idx is not None]
        return min(heads) if heads else self.f_insn

    def _stuck_since(self):
        """The first cycle of dispatch's ``stuck`` (a deadlock's) for good: engines idle
        after the last completion, fetch ended or ``blocked``, every queue head valid and
        waiting for a token since the tokens last changed."""
        fetch = self.f_blocked_at if self.f_blocked_at is not None else (
            max(self.f_end_at or 0, (self.f_last_push or 0) + 1))
        heads = [q.R[q.issued] + 1 for q in self.queues if not q.empty() and q.issued < len(q.R)]
        return max([self.last_done + 1, fetch, self.tok.changed] + heads)

    def _next(self):
        """The next cycle to step, or None when the run stops before it (a deadlock or the
        watchdog in the cycles nothing happens, the harness's bound)."""
        c = self.heap[0] if self.heap else None
        dog = None
        if self.watchdog:
            fh, w = self.fin_heap, self.watchdog
            while fh and (c is None or fh[0] < c) and fh[0] <= self.last_progress + w + 1:
                self.last_progress = max(self.last_progress, heapq.heappop(fh))
            dog = self.last_progress + w + 1
        stops = []
        if dog is not None and (c is None or dog < c):
            stops.append((dog, 6, isa.ErrorCode.WATCHDOG))
        if c is None and not self.l_forever and not all(q.empty() for q in self.queues):
            # nothing changes any more, no engine is busy and the queues wait
            stops.append((self._stuck_since() + DEADLOCK_CYCLES - 1, 5, isa.ErrorCode.TOKEN_DEADLOCK))
        if stops:
            cycle, _, code = min(stops)
            self._end(cycle, code, self._oldest(cycle))
            return None
        if c is None or (self.limit is not None and c > self.limit):
            self.timed_out = True
            self.stopped = (self.limit if self.limit is not None else self.now, 0, 0, 0)
            return None
        return c

    # -- one cycle ------------------------------------------------------------------
    def step(self, c):
        L, wake = self.L, self.wake
        self._snapshots(c)
        pending = self.tok.pending
        if pending and pending[0][0] <= c:
            self.tok.advance(c, self.stops)
        if self.stops:
            first = min(self.stops)
            if first[0] <= c:
                self._end(first[0], *first[2:])
                return True
        if self.os is not None and self.os.boundary == c:
            self.os.at_boundary()
            self._os_event()
        acted = False         # the next cycle may differ from this one (wake it)
        acted_other = False   # something other than the LOAD's own request changed
        # fetch request side
        f_want = None
        walking = c >= FIRST_REQUEST and not self.f_req_end and not self.f_req_err
        take = False
        desc_pending = self.f_desc_pending and c <= self.f_desc_resp
        # nothing requested and not yet pushed (fetch's ``drained``)
        drained = not self.f_arr and self.f_count == 0 and not desc_pending
        refused = None
        if walking:
            slot_valid = self.f_slot is not None and self.f_slot_from <= c
            node_done = self.f_node_left == 0
            take = node_done and slot_valid
            take_end = take and self.f_slot["n_insn"] == 0
            desc_addr = self.prog_base + isa.DESC_BYTES * self.f_desc_idx
            desc_ok = self.f_desc_ok.get(self.f_desc_idx)
            if desc_ok is None:
                desc_ok = self.f_desc_ok[self.f_desc_idx] = (
                    self.prog_base % 8 == 0 and self._fetch_ok(desc_addr, isa.DESC_BYTES))
            want_desc = not desc_pending and (not slot_valid or take) and not take_end and desc_ok
            room = self.f_words_req - self.f_taken < self.f_depth
            insn_in = (node_done or self.f_req_word != 0 or self.f_block_ok
                       or (self.f_insn_ok and self._fetch_ok(self.f_req_addr, isa.INSN_BYTES)))
            want_word = not node_done and insn_in and room
            if want_desc:
                f_want = "desc"
            elif want_word:
                f_want = "word"
            if node_done and not slot_valid and not desc_pending and not desc_ok:
                refused = desc_addr
            elif not insn_in:
                refused = self.f_req_addr
        if refused is not None or self.f_req_err:
            if refused is not None:
                self.f_req_err, self.f_fault = True, refused
            if drained:
                self._end(c, isa.ErrorCode.BAD_DESCRIPTOR, self.f_insn, self.f_fault)
                return True
        l_want = (self.l_reqs is not None and c >= self.l_run_from and self.l_i < len(self.l_reqs))
        l_pad = False
        if l_want:
            while self.l_pops and self.l_pops[0] < c:
                self.l_pops.popleft()
            if len(self.l_pops) >= L + 2:
                l_want = False
                wake(self.l_pops[0] + 1)
            else:
                l_pad = self.l_reqs[self.l_i][0]
        s_want = self.s_want is not None and c >= self.s_want
        # bus
        wants = [f_want is not None, l_want and not l_pad, s_want]
        grant = None
        if any(wants):
            if c >= self.dram_free:
                for k in range(1, 4):
                    cl = (self.rr_last + k) % 3
                    if wants[cl]:
                        grant = cl
                        break
                self.rr_last = grant
                if self.log_grants:
                    self.tl.grants.append((c, grant))
                self.dram_free = c + self.k
                acted = sum(wants) > 1     # the clients that lost want it again next cycle
            else:
                wake(self.dram_free)
        # fetch updates
        if take:
            n, off = self.f_slot["n_insn"], self.f_slot["insn_offset"]
            kind = self.f_slot["kind"]
            if self.desc_ends and (n == 0 or kind != self.desc_kind):
                self.desc_ends[-1] = True
            self.f_node_left = n
            self.f_req_word = 0
            self.f_req_addr = self.prog_base + off
            self.f_insn_ok = off % isa.INSN_BYTES == 0
            # the node's whole block readable: every instruction of it is
            self.f_block_ok = self.f_insn_ok and n > 0 and self._fetch_ok(self.f_req_addr, n * isa.INSN_BYTES)
            if n == 0:
                self.f_req_end = True
                self.f_end_at = c + 1
            else:
                self.f_node = len(self.desc_left)
                self.desc_left.append(n)
                self.desc_max.append(0)
                self.desc_kind = kind
                self.desc_ends.append(False)
                # the node's instructions: fetch-order indices first .. first + n - 1 at
                # f_node_base (the jump reads them)
                self.f_node_first, self.f_node_n = self.f_insn_taken, n
                self.f_node_base = self.f_req_addr
                self.f_insn_taken += n
            self.f_slot = None
            acted = acted_other = True
        if grant == _FETCH:
            acted = acted_other = True
            self.ev_add("dram_bytes_read", c + L, 8)   # DRAM_RD: 8 bytes per fetched word
            if f_want == "desc":
                self.f_desc_pending = True
                self.f_desc_resp = c + L
                # the DRAM reads a word as it is when it accepts the request
                a = self.prog_base + isa.DESC_BYTES * self.f_desc_idx
                self.f_slot = isa.unpack_bytes(isa.NodeDescriptor, self.sim.dram[a:a + isa.DESC_BYTES])
                self.f_slot_from = c + L + 1
                self.f_desc_idx += 1
                wake(c + L + 1)
            else:
                self.f_words_req += 1
                a = self.f_req_addr
                self.f_arr.append((c + L, int.from_bytes(self.sim.dram[a:a + 8], "little"), self.f_node))
                self.f_req_addr += 8
                wake(c + L)
                self.f_req_word += 1
                if self.f_req_word == isa.INSN_WORDS:
                    self.f_req_word = 0
                    self.f_node_left -= 1
        # assembler / push (response side)
        if c >= FIRST_REQUEST:
            full = self.f_count == isa.INSN_WORDS
            push_fire = False
            if full:
                d = self.f_dec
                if d is None:
                    d = self.f_dec = self._assembled()
                if d is None:
                    self._end(c, isa.ErrorCode.ILLEGAL_OPCODE, self.f_insn)
                    return True
                q = self.queues[_QUEUE[d["op"]]]
                if q.w_rdy(c):
                    self._push(q, d, c)
                    self.f_blocked_at = None
                    push_fire = True
                    acted = acted_other = True
                elif self.f_blocked_at is None:
                    self.f_blocked_at = c         # fetch's ``blocked`` from this cycle
            can_take = not full or push_fire
            if can_take and self.f_arr and self.f_arr[0][0] <= c:
                _, word, node = self.f_arr.popleft()
                if self.f_count == 0 or push_fire:
                    self.f_words, self.f_words_node = [], node
                self.f_words.append(word)
                self.f_taken += 1
                self.f_count += 1
                acted = acted_other = True
        # load updates
        load_alone = False
        if l_want and (l_pad or grant == _LOAD):
            load_alone = not acted_other and f_want is None and not s_want
            self._load_issue(c)
            acted = acted or self.l_reqs is not None   # it wants its next request next cycle
        # store updates
        if s_want and grant == _STORE:
            pos, nbytes = self.s_flushes[self.s_fi]
            self.ev_add("dram_bytes_written", c, nbytes)
            self.s_fi += 1
            if self.s_fi < len(self.s_flushes):
                self.s_want = c + self.s_flushes[self.s_fi][0] - pos
                wake(self.s_want)
            else:
                self._store_done(c + 1 + (self.s_T - 1 - pos))
        # dispatch
        if c >= 1 and self._dispatch(c):
            acted = acted_other = True
        if load_alone and not acted_other and grant in (None, _LOAD) and not self.heap_has(c + 1):
            # Nothing else changes before the next scheduled event: the LOAD streams its
            # requests (one per cycle, reads as the DRAM accepts them) up to it.
            self._load_stream(c)
        elif acted:
            wake(c + 1)
        if self.watchdog:
            fh = self.fin_heap
            progress = self.f_last_push == c
            while fh and fh[0] <= c:
                progress = heapq.heappop(fh) == c or progress
            if progress:
                self.last_progress = c
            elif c >= self.last_progress + self.watchdog + 1:
                self._end(c, isa.ErrorCode.WATCHDOG, self._oldest(c))
                return True
        return self._finished(c)

    def heap_has(self, c):
        return c in self.queued

    # -- fetch ------------------------------------------------------------------------
    def _fetch_ok(self, addr, nbytes):
        """Fetch may read ``nbytes`` at ``addr``: inside the DRAM and the read window."""
        end = addr + nbytes
        base, size = self.sim.read_window
        return end <= len(self.sim.dram) and (size == 0 or (addr >= base and end <= base + size))

    def _assembled(self):
        """The instruction in the assembler, decoded (None: its opcode has no queue)."""
        word = isa.decode_words(self.f_words)
        d = self.memo.get(word)
        if d is None:
            d = self.memo[word] = isa.decode(word)
        return None if d.get("illegal") else d

    def _push(self, q, d, c):
        """Fetch pushes the assembled instruction ``d`` into queue ``q`` in cycle ``c``."""
        idx = self.f_insn
        self._record(d, self.f_words_node)
        q.push(c, idx, self.wake)
        self.f_insn += 1
        self.f_last_push = c
        self.f_count = 0
        self.f_dec = None

    @staticmethod
    def queue_pops(d):
        """The queue of the decoded instruction ``d`` and the tokens it pops."""
        qi, dep = _QUEUE[d["op"]], d["dep"]
        return qi, tuple(name for flag, name in _POPS[qi] if dep[flag])

    def _record(self, d, node, entry=None):
        """The next instruction (fetch order) is ``d`` of node ``node``: its entries
        (``entry``: :meth:`queue_pops` of ``d``, where the caller has it)."""
        self.insns.append(d)
        self.node_of.append(node)
        qi, pops = entry or self.queue_pops(d)
        self.pops.append(pops)
        tl = self.tl
        tl.issue.append(None)
        tl.done.append(None)
        tl.queue.append(qi)
        tl.node.append(node)
        tl.op.append(d["op"])

    def _load_issue(self, c):
        """The LOAD issues its next request in cycle ``c`` (a read granted, or a pad)."""
        pad, nbytes = self.l_reqs[self.l_i]
        if pad:
            prev = self.l_last_pop if self.l_last_pop is not None else c
            pop = max(c + 1, prev + 1)
        else:
            pop = c + self.L
            self.ev_add("dram_bytes_read", pop, nbytes)
            if self.log_grants and c != self.tl.grants[-1][0]:
                self.tl.grants.append((c, _LOAD))
        self.l_pops.append(pop)
        self.l_last_pop = pop
        self.l_i += 1
        if self.l_i == len(self.l_reqs):
            if self.l_endless:
                self.l_reqs = None           # busy past the bound
                self.l_forever = True
            else:
                self._load_done(pop + 1)

    def _load_stream(self, c):
        """After the LOAD's request in cycle ``c``, with nothing else wanting the bus and
        no event scheduled before ``T``: its following requests up to ``T``."""
        limit = self.heap[0] if self.heap else 1 << 62
        if self.watchdog:           # the watchdog may stop the run (see _next)
            limit = min(limit, self.last_progress + self.watchdog + 2)
        t = c
        while self.l_reqs is not None and self.l_i < len(self.l_reqs):
            pad = self.l_reqs[self.l_i][0]
            nxt = t + 1 if pad else max(t + 1, self.dram_free)
            if nxt >= limit:
                break
            pops = self.l_pops
            while pops and pops[0] < nxt:
                pops.popleft()
            if len(pops) >= self.L + 2:
                self.wake(pops[0] + 1)
                return
            if not pad:
                self.rr_last = _LOAD
                self.dram_free = nxt + self.k
            t = nxt
            self._load_issue(t)
        if self.l_reqs is not None:
            self.wake(t + 1 if self.l_reqs[self.l_i][0] else max(t + 1, self.dram_free))
        elif self.k > 1:
            self.wake(self.dram_free)

    # -- completion -------------------------------------------------------------------
    def _fin(self, idx, done):
        """Instruction ``idx`` completes (``done`` pulse) in cycle ``done``: its token
        pushes count from ``done + 1``."""
        self.tl.done[idx] = done
        if self.watchdog:
            heapq.heappush(self.fin_heap, done)
        qi = _QUEUE[self.insns[idx]["op"]]
        if idx in self.fails:
            # an error pulse instead of ``done``: the machine stops in that cycle
            code, addr = self.fails[idx]
            self.stops.append((done, qi, code, idx, addr))
            self.wake(done)
            return
        self.n_done += 1
        nd = self.node_of[idx]
        self.desc_left[nd] -= 1
        self.desc_max[nd] = max(self.desc_max[nd], done)
        self.last_done = max(self.last_done, done)
        dep = self.insns[idx]["dep"]
        for flag, name in _PUSHES[qi]:
            if dep[flag]:
                self.tok.change(done + 1, name, +1, self.wake, idx)
        if qi != 1:
            self.wake(done)     # a DMA engine is idle (ready) in its done cycle
        self.wake(done + 1)     # the compute engines from the next; tokens; the end

    def _load_done(self, done):
        self.l_ready_at = done
        self.l_reqs = None
        self.busy["load"].append((self.l_accept + 1, done - 1))
        self._fin(self.l_idx, done)

    def _store_done(self, done):
        self.s_ready_at = done
        self.s_want = None
        self.busy["store"].append((self.s_accept + 1, done - 1))
        self._fin(self.s_idx, done)

    def _gemm_end(self, j, end):
        """GEMM number ``j`` (acceptance order) ends in ``end``."""
        self.g_ends[j] = end
        idx = self.g_idx[j]
        self.busy["pe"].append((self.g_accepts[j] + 1, end))
        self._fin(idx, end)

    def _finished(self, c):
        """``end.finished`` in cycle ``c``: fetch ended, the queues empty, every
        instruction done before ``c``."""
        return (self.n_done == len(self.insns) and self.f_end_at is not None and c >= self.f_end_at
                and not self.f_arr and self.f_count == 0
                and (self.f_last_push is None or c > self.f_last_push)
                and c > self.last_done
                and all(q.empty() and (q.last_issue is None or c > q.last_issue) for q in self.queues))

    # -- dispatch ----------------------------------------------------------------------
    def _dispatch(self, c):
        acted = False
        # LOAD and STORE: the head starts when its engine is idle and its tokens are there
        for qi, ready_at, accept in ((0, self.l_ready_at, self._load_accept),
                                     (2, self.s_ready_at, self._store_accept)):
            idx = self.queues[qi].head(c)
            if idx is not None and c >= ready_at and self._tokens_ok(qi, idx):
                self._issue(qi, idx, c)
                accept(idx, self.insns[idx], c)
                acted = True
        # COMPUTE: in order across the PE array and the vector engine
        idx = self.queues[1].head(c)
        if (idx is None or (self.nop_at is not None and self.nop_at == c - 1)
                or not self._tokens_ok(1, idx)):
            return acted
        d = self.insns[idx]
        op = d["op"]
        vec_idle = not (self.v_accept is not None and self.v_accept < c <= self.v_end)
        if op == Opcode.GEMM:
            go = self._engine_ready(c) and vec_idle and self._gq_room(c)
        elif op == Opcode.VEC:
            go = self._gemm_idle(c) and c > self.v_end
        else:
            go = self._gemm_idle(c) and vec_idle and c > self.v_end and self._engine_ready(c)
        if not go:
            return acted
        self._issue(1, idx, c)
        if op == Opcode.GEMM:
            self._gemm_accept(idx, d, c)
        elif op == Opcode.VEC:
            self.v_accept = c
            self.v_end = c + vec_cycles(d, self.cfg)
            self.busy["vec"].append((c + 1, self.v_end))
            self._fin(idx, self.v_end)
        else:
            self.nop_at = c
            self._fin(idx, c + 1)
            self.wake(c + 2)
        return True

    def _tokens_ok(self, qi, idx):
        """Every token the instruction ``idx`` at the head of queue ``qi`` pops is there."""
        tok = self.tok.value
        for name in self.pops[idx]:
            if not tok[name]:
                return False
        return True

    def _issue(self, qi, idx, c):
        """Instruction ``idx`` leaves queue ``qi`` in cycle ``c``: its pops, the counters,
        its functional execution."""
        for name in self.pops[idx]:
            self.tok.change(c + 1, name, -1, self.wake)
        self.queues[qi].issue(c, self.wake)
        self.tl.issue[idx] = c
        self.ev_add("insns", c, 1)
        d = self.insns[idx]
        try:
            if qi == 0 and self._endless(d, c):
                self.sim.check_load(d)       # it cannot end before the run does
            else:
                self.sim.execute(d)
        except IsaError as e:
            # the engine reports it when the instruction would end (load / store: t + 2)
            addr = self.sim.fault_addr if e.code == isa.ErrorCode.DMA_OUT_OF_WINDOW else 0
            self.fails[idx] = (int(e.code), addr)

    def _endless(self, d, c):
        """The LOAD ``d`` issued in ``c`` has more requests than the run has cycles left
        before the harness's bound (e.g. ``n1 = n2 = 65535`` with zero strides)."""
        if self.limit is None:
            return False
        n0, n1, n2 = d["n0"], d["n1"], d["n2"]
        return n1 * n2 * (n0 + 1) > self.limit - c + 2

    def _load_accept(self, idx, d, t):
        self.l_idx, self.l_accept = idx, t
        if not (d["n0"] and d["n1"] and d["n2"]) or idx in self.fails:
            self.l_reqs = None
            self._load_done(t + 2)
            return
        if self._endless(d, t):
            # the requests up to the bound: runs of i1 (then i2) at one request or more each
            runs = self.limit - t + 2
            n1 = min(d["n1"], runs)
            d = dict(d, n1=n1, n2=min(d["n2"], -(-runs // n1)))
            self.l_endless = True
        else:
            self.l_endless = False
        self.l_reqs = load_plan(d, self.cfg, self.sim.base)
        self.l_i = 0
        self.l_pops = deque()
        self.l_last_pop = None
        self.l_run_from = t + 2
        self.l_ready_at = 1 << 62          # until done
        self.wake(t + 2)

    def _store_accept(self, idx, d, t):
        self.s_idx, self.s_accept = idx, t
        if not (d["n_len"] and d["m_len"]) or idx in self.fails:
            self._store_done(t + 2)
            return
        T, flushes = store_plan(d, self.cfg, self.sim.base)
        self.s_T = T
        self.s_ready_at = 1 << 62
        o0 = t + 2 + PPU_LATENCY
        if not flushes:
            self._store_done(o0 + T)
            return
        self.s_flushes, self.s_fi = flushes, 0
        self.s_want = o0 + flushes[0][0]
        self.wake(self.s_want)

    # -- compute engines -------------------------------------------------------------------
    def _gq_room(self, c):
        """Fewer than GEMMS_IN_FLIGHT GEMMs in dispatch's in-flight FIFO in cycle ``c``."""
        n = len(self.g_accepts)
        inflight = 0
        for j in range(n - 1, max(-1, n - GEMMS_IN_FLIGHT - 1), -1):
            e = self.g_ends[j]
            if self.g_accepts[j] < c and (e is None or e >= c):
                inflight += 1
        return inflight < GEMMS_IN_FLIGHT

    def _gemm_idle(self, c):
        if not self.g_accepts:
            return True
        e = self.g_ends[-1]
        return e is not None and e < c

    def _engine_init(self):
        self.e_ready_at = 0
        cfg = self.cfg
        self.ws = WSTiming(cfg)
        self.rs = RSTiming(cfg)
        self.os = OSTiming(cfg, lambda g: dense_steps(g, cfg), self._gemm_end) if self.df == "os" else None
        self.fe = FEIETiming(cfg) if self.df == "feie" else None

    def _engine_ready(self, c):
        if self.df == "os":
            if self.os.reg is not None or c < self.os.leave + 1:
                return False
            n = len(self.g_accepts)
            out = sum(1 for j in range(max(0, n - GEMMS_IN_FLIGHT), n)
                      if self.g_accepts[j] < c and (self.g_ends[j] is None or self.g_ends[j] >= c))
            return out < GEMMS_IN_FLIGHT
        if self.fe is not None:
            return self.fe.ready(c)
        if self.df == "rs":
            return self.rs.accept_at(c) == c
        return c >= self.e_ready_at

    def _gemm_accept(self, idx, d, a):
        cfg = self.cfg
        j = len(self.g_accepts)
        self.g_accepts.append(a)
        self.g_ends.append(None)
        self.g_idx.append(idx)
        g = None if self.df == "ws" else legal_gemm(d, cfg)   # ws.accept works it out
        # MACS counts at issue, an out-of-range GEMM's too (dispatch reads the fields)
        macs = d["m_len"] * d["k_len"] * d["n_len"]
        if self.taps and d["window"]:
            macs *= d["win_h"] * d["win_w"]
        self.ev_add("macs", a, macs)
        if self.df == "ws":
            self._ws_accept(j, d, a)
        elif self.df == "os":
            self.os.accept(j, g, a)
            self._os_event()
        elif self.df == "rs":
            end = self.rs.accept(d, a)
            t = self.rs
            if t.cur is not None:        # its window for the next GEMM, and idle after it
                self.wake(t.cur[0])
                self.wake(t.cur[4] + 1)
            self.wake(t.idle_at)
            self._gemm_end(j, end)
        else:                            # feie
            ifmap = self.sim.ifmap
            end, tr = self.fe.accept(d, ifmap, a, lambda d, start: _feie_trace(d, g, cfg, ifmap, start))
            if tr is not None:
                self.ev_add("zero_skips", end, tr.zero_skips)
                self.ev_add("mac_cycles", end, tr.mac_cycles)
            for w in self.fe.wakes():
                self.wake(max(w, a + 1))
            self._gemm_end(j, end)

    def _ws_accept(self, j, d, a):
        end = self.ws.accept(d, a)
        self.e_ready_at = self.ws.ready_at
        self.wake(self.e_ready_at)
        self._gemm_end(j, end)

    def _os_event(self):
        """After the ``os`` timing changed: wake at its next boundary and when its register
        frees."""
        t = self.os
        if t.boundary is not None:
            self.wake(t.boundary)
        self.wake(t.leave + 1)


def _merge(intervals):
    out = []
    for lo, hi in sorted(intervals):
        if hi < lo:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _intersect(a, b):
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


class CounterLog:
    """The counters of a run at its descriptor boundaries and its end: :meth:`at` gives
    what the hardware's counters hold at the end of such a cycle (they count cycles 1 ..
    that cycle). Busy counters come from the engines' busy intervals, event counters from
    the totals the run recorded at each boundary (so a long run keeps no per-event log)."""

    def __init__(self, m: _Machine, end: int):
        self.busy = {
            "load_busy": _merge(m.busy["load"]),
            "compute_busy": _merge(m.busy["pe"] + m.busy["vec"]),
            "store_busy": _merge(m.busy["store"]),
        }
        self.busy["load_compute_overlap"] = _merge(_intersect(self.busy["load_busy"],
                                                              self.busy["compute_busy"]))
        self._busy_ends = {k: [hi for _, hi in v] for k, v in self.busy.items()}
        self._busy_sums = {k: _prefix([hi - lo + 1 for lo, hi in v]) for k, v in self.busy.items()}
        m._fold(end)
        #: cycle -> event totals: each descriptor boundary, and the end
        self.events = {b: tot for b, tot in m.desc_snaps}
        self.events[end] = dict(m.tot)
        #: node -> its boundary cycle: a node is a run of consecutive descriptors of one
        #: kind (a layer of more than 65535 instructions takes several), and the
        #: controller snapshots at the end of its last (rtl/controller/fetch.py)
        self.bounds = [b for (b, _), end in zip(m.desc_snaps, m.desc_ends) if end]

    def _busy(self, name, upto):
        ivs, ends = self.busy[name], self._busy_ends[name]
        i = bisect.bisect_left(ends, upto)          # intervals [0, i) end before upto
        total = self._busy_sums[name][i]
        if i < len(ivs) and ivs[i][0] <= upto:
            total += upto - ivs[i][0] + 1
        return total

    def at(self, upto: int) -> dict:
        """The counters (:data:`celosia.sim.job.COUNTERS` names) at the end of cycle ``upto``,
        a descriptor boundary or the run's end."""
        events = self.events[upto]
        return {name: upto if name == "cycles" else
                self._busy(name, upto) if name in self.busy else events[name] for name in COUNTERS}


def _prefix(values):
    out = [0]
    for v in values:
        out.append(out[-1] + v)
    return out


def _program(sim: IsaSim, prog_base: int, memo: dict | None = None):
    """The descriptor table (n_insn per node, the end marker's 0 last) and the decoded
    instructions of the program at ``prog_base``, with each instruction's node, as they
    are in DRAM before the run (the model itself fetches each word when the RTL does);
    ``memo`` (instruction word -> decoded fields) saves decoding a word twice."""
    memo = {} if memo is None else memo
    descs, insns, node_of = [], [], []
    i = 0
    while True:
        at = prog_base + isa.DESC_BYTES * i
        sim._check_fetch(at, isa.DESC_BYTES)
        desc = isa.unpack_bytes(isa.NodeDescriptor, sim.dram[at:at + isa.DESC_BYTES])
        n = desc["n_insn"]
        descs.append(n)
        if n == 0:
            return descs, insns, node_of
        for j in range(n):
            a = prog_base + desc["insn_offset"] + j * isa.INSN_BYTES
            sim._check_fetch(a, isa.INSN_BYTES)
            word = int.from_bytes(sim.dram[a:a + isa.INSN_BYTES], "little")
            d = memo.get(word)
            if d is None:
                d = memo[word] = isa.decode(word)
            if d.get("illegal"):
                raise IsaError(isa.ErrorCode.ILLEGAL_OPCODE, f"opcode {d['op']} (instruction #{len(insns)})")
            insns.append(d)
            node_of.append(i)
        i += 1


def _footprint(d: dict, base) -> list[tuple[str, int, int, bool]]:
    """What instruction ``d`` touches: ``(space, first, last, writes)`` per buffer
    (``ifmap``, ``weight``, ``param``, ``psum``: rows) and for DRAM (``dram``: bytes),
    each a range that covers every access (base registers ``base``)."""
    op = d["op"]
    if op == Opcode.LOAD:
        n0, n1, n2 = d["n0"], d["n1"], d["n2"]
        if not (n0 and n1 and n2):
            return []
        s1, s2 = d["dram_stride1"], d["dram_stride2"]
        start = base[d["base_reg"]] + d["dram_offset"]
        space = {isa.Buffer.IFMAP: "ifmap", isa.Buffer.WEIGHT: "weight"}.get(d["buf"], "param")
        last = d["buf_row"] + (n1 - 1) * d["buf_stride1"] + (n2 - 1) * d["buf_stride2"]
        return [(space, d["buf_row"], last, True),
                ("dram", start, start + (n1 - 1) * s1 + (n2 - 1) * s2 + (n0 - 1) * d["dram_stride0"], False)]
    if op == Opcode.STORE:
        m_len, n_len = d["m_len"], d["n_len"]
        if not (m_len and n_len):
            return []
        out = [("psum", d["psum_row"], d["psum_row"] + m_len - 1, False),
               ("param", d["param_row"], d["param_row"] + n_len - 1, False)]
        if d["to_buf"]:
            return out + [("ifmap", d["buf_row"], d["buf_row"] + (m_len - 1) * d["buf_stride"], True)]
        start = base[d["base_reg"]] + d["dram_offset"]
        return out + [("dram", start, start + (m_len - 1) * d["dram_stride"] + n_len - 1, True)]
    if op == Opcode.VEC:
        m_len = d["m_len"]
        if not (m_len and d["win"]):
            return []
        return [("ifmap", d["ifmap_row"], d["ifmap_row"] + m_len * d["win"] - 1, False),
                ("psum", d["psum_row"], d["psum_row"] + m_len - 1, True)]
    if op == Opcode.GEMM:
        m_len = d["m_len"]
        if not m_len:
            return []
        taps = d["win_h"] * d["win_w"] if d["window"] else 1
        if d["window"]:
            last = (d["ifmap_row"] + ((d["out_h"] - 1) * d["stride_h"] + (d["win_h"] - 1) * d["dil_h"])
                    * d["row_pitch"] + (d["out_w"] - 1) * d["stride_w"] + (d["win_w"] - 1) * d["dil_w"])
        else:
            last = d["ifmap_row"] + m_len - 1
        return [("ifmap", d["ifmap_row"], last, False),
                ("weight", d["weight_row"], d["weight_row"] + d["k_len"] * taps - 1, False),
                ("psum", d["psum_row"], d["psum_row"] + m_len - 1, True)]
    return []


def races(m: "_Machine", base) -> list[tuple[int, int]]:
    """The pairs of instructions (fetch order) of the run ``m`` from different queues that
    were in flight together (one issued before the other's ``done``) and touch the same
    buffer rows or DRAM bytes, one of them writing: what each reads then depends on
    cycle-level timing inside the engines, which the ISA simulator does not model (it
    executes an instruction whole when it issues)."""
    tl, fails = m.tl, m.fails
    spans = sorted((tl.issue[i], 1 << 62 if tl.done[i] is None else tl.done[i], i)
                   for i in range(len(m.insns)) if tl.issue[i] is not None and i not in fails)
    feet = {i: _footprint(m.insns[i], base) for _, _, i in spans}
    out, active = [], []
    for issue, done, i in spans:
        active = [a for a in active if a[1] > issue]
        for _, _, j in active:
            if tl.queue[i] == tl.queue[j]:
                continue
            if any(sa == sb and (wa or wb) and la <= hb and lb <= ha
                   for sa, la, ha, wa in feet[i] for sb, lb, hb, wb in feet[j]):
                out.append((min(i, j), max(i, j)))
        active.append((issue, done, i))
    return out


def simulate(config: AccelConfig, sim: IsaSim, prog_base: int, memo: dict | None = None,
             log_grants: bool = False, watchdog: int = 0, limit: int | None = None,
             check_races: bool = False, jump: bool = False) -> PerfResult:
    """One run of the program at ``prog_base`` on ``sim`` (its DRAM, buffers, base
    registers and windows are the machine's state; the run executes every instruction on
    it when the RTL issues it): the counters, per-node counters and the timeline.
    ``memo``: instruction word -> decoded fields, shared by the runs of a job;
    ``log_grants``: record every bus grant in the timeline (for debugging; one entry per
    bus request); ``watchdog``: the WATCHDOG CSR; ``limit``: the last cycle the harness
    waits for (later: ``timed_out``).

    The run stops as the RTL stops (``rtl/controller/dispatch.py``), in the same cycle
    and with the same STATUS.error, ERROR_INFO and FAULT_ADDR: an instruction's error
    when its engine reports it (LOAD / STORE two cycles after issue, a GEMM / VEC at
    its end), fetch's BAD_DESCRIPTOR / ILLEGAL_OPCODE when fetch reaches the word, a
    token counter passing 255, a deadlock, the watchdog. Nothing issues in the cycle of
    an engine or fetch error. DRAM then holds what the stores issued before the stop
    wrote (a store in flight completes; a faulting one writes nothing). Only the
    counters of a run that ends without error are exact. ``check_races``: fill the
    result's ``races`` (:func:`races`). ``jump``: replay the segments already stepped
    through (:mod:`celosia.sim.perf_jump`; only for a run that executes nothing, so the
    caller must have made ``sim`` execute nothing; not with ``log_grants`` or
    ``check_races``, nor for ``feie``); the result's ``jumped`` counts the replayed ones."""
    m = _Machine(config, sim, prog_base, memo, log_grants, watchdog=watchdog, limit=limit,
                 jump=jump and not check_races)
    end = m.run()
    if m.stopped is not None:
        # the DMA engines busy at the stop (their busy intervals end with their done)
        if m.l_ready_at == 1 << 62:
            m.busy["load"].append((m.l_accept + 1, end))
        if m.s_ready_at == 1 << 62:
            m.busy["store"].append((m.s_accept + 1, end))
    log = CounterLog(m, end)
    code, info, addr = (0, 0, 0) if m.stopped is None else m.stopped[1:]
    res = PerfResult(status=isa.pack(isa.Status, busy=int(m.timed_out), done=int(not m.timed_out),
                                     error=0 if m.timed_out else code),
                     error=0 if m.timed_out else code, error_info=info, counters=log.at(end),
                     data=[], timeline=m.tl, log=log, timed_out=m.timed_out, fault_addr=addr)
    if check_races:
        res.races = races(m, list(sim.base))
    if m.jump is not None:
        res.jumped = m.jump.hits
    return res


def harness_limit(job: Job, poll_cycles: int = POLL_CYCLES) -> int:
    """The last cycle of a run (counted from the ``CTRL`` write) whose stop the harness
    (:func:`celosia.sim.job.run_job`) sees: it polls STATUS every ``poll_cycles`` and gives
    up after ``job.max_cycles`` (rounded up to a poll)."""
    return -(-job.max_cycles // poll_cycles) * poll_cycles - 2


def run(config: AccelConfig, job: Job, progress=None, execute: bool = True,
        log_grants: bool = False, events: bool = False,
        poll_cycles: int = POLL_CYCLES, check_races: bool = False,
        jump: bool | None = None) -> list[PerfResult]:
    """Perform ``job`` (as :func:`celosia.sim.job.run_job` does on the RTL) on the cycle
    model: one :class:`PerfResult` per run, with the RTL's counters.

    This is also the ISA simulator's RTL-order mode (docs/perf.md, "Errors"): every
    instruction executes on an :class:`~celosia.sim.isa_sim.IsaSim` in the cycle the RTL
    issues it, fetch reads each word from DRAM when the RTL does, and a run stops as the
    RTL stops (:func:`simulate`), with the job's WATCHDOG CSR and the harness's bound
    (:func:`harness_limit` of ``job.max_cycles`` and ``poll_cycles``; past it the result
    says ``timed_out``).

    ``execute``: run every instruction on the ISA simulator as it issues, so the results
    hold the outputs (``data``) the hardware computes; without it only the timing is
    modelled (``data`` is then what the DRAM image held; no instruction errors) and a run
    that repeats an earlier one's program with the same base-register alignment reuses its
    timing. The ``feie`` engine's timing depends on the data, so it always executes. Each
    result's ``nodes`` holds the per-node snapshots, and with ``events`` its ``events`` the
    instruction events, as the RTL harnesses record them; with ``check_races`` its
    ``races`` (:func:`races`).

    ``jump`` (default: on unless the environment sets ``CELOSIA_PERF_JUMP=0``): where
    only the timing is modelled, replay the instruction-to-instruction segments whose
    state and instructions repeat an earlier one's instead of stepping through them
    (:mod:`celosia.sim.perf_jump`, docs/perf.md "Speed"); the results are the same."""
    if jump is None:
        jump = os.environ.get("CELOSIA_PERF_JUMP", "1") != "0"
    execute = execute or config.dataflow == "feie"
    # an anonymous mapping: zero-filled page by page as the run touches it, so a large
    # DRAM (the zoo's big models need up to 256 MiB) costs only what the job uses
    sim = IsaSim(config, mmap.mmap(-1, job.dram_bytes))
    for addr, payload in job.image:
        sim.dram[addr:addr + len(payload)] = payload
    if not execute:
        sim.execute = lambda d: None
        sim.check_load = lambda d: None
    results, seen, memo = [], {}, {}
    limit = harness_limit(job, poll_cycles)
    regs = {}                               # the CSRs keep their values across runs
    for index, r in enumerate(job.runs):
        for addr, payload in r.writes:
            sim.dram[addr:addr + len(payload)] = payload
        regs.update(r.csr_writes)
        for i in range(isa.NUM_BASE_REGS):
            if Csr.BASE0 + i in regs:
                sim.base[i] = regs[Csr.BASE0 + i]
        sim.read_window = (regs.get(Csr.WINDOW_BASE, 0), regs.get(Csr.WINDOW_SIZE, 0))
        sim.write_window = (regs.get(Csr.WR_BASE, 0), regs.get(Csr.WR_SIZE, 0))
        prog_base = regs.get(Csr.PROG_BASE, 0)
        watchdog = regs.get(Csr.WATCHDOG, 0)
        key = (prog_base, tuple(b % config.bus_bytes for b in sim.base))
        if not execute and key in seen:
            res = dataclasses.replace(seen[key])
        else:
            res = seen[key] = simulate(config, sim, prog_base, memo, log_grants, watchdog, limit,
                                       check_races, jump=jump and not execute)
        res.data = [bytes(sim.dram[a:a + n]) for a, n in r.readback]
        if res.log is not None:
            res.nodes = res.node_snapshots()
            if events:
                res.events = res.instruction_events()
        results.append(res)
        if progress is not None:
            progress(index + 1, len(job.runs))
    return results
