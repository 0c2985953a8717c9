"""Vector engine: lane-wise max / sum / residual add of ifmap rows into the psum buffer.

Executes :data:`~celosia.rtl.isa.VecInsn` (pooling and residual add) on the
compute queue, next to the PE array; the controller never runs both at once, so
the top shares the ifmap read port and the psum write port between them.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.arrays.engine import ControlledEngine, insn_check_state
from celosia.rtl.buffers import BufferReadSignature, BufferWriteSignature
from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.controller.signatures import EngineSignature
from celosia.rtl.dma import accept_state
from celosia.rtl.ppu import MBQM_STAGES, mbqm_stages

__all__ = ["VectorEngine", "vec_insn_ok", "vec_cycles"]


def vec_insn_ok(insn, config: AccelConfig):
    """1-bit expression: the VEC ``insn`` (a ``VecInsn`` view) is executable.

    ``lanes <= min(rows, cols)``, ``ifmap_row + m_len * win <= ifmap_rows``,
    ``psum_row + m_len <= psum_rows`` (no 16-bit wrap), ``mode`` one of
    :class:`~celosia.rtl.isa.VecMode` and, for ADD, ``win >= 2`` (ADD uses the
    first two rows of each window). Applied regardless of ``m_len``.
    """
    mode = insn.mode.as_value()
    return ((insn.lanes <= min(config.rows, config.cols))
            & (insn.ifmap_row + insn.m_len * insn.win <= config.ifmap_rows)
            & (insn.psum_row + insn.m_len <= config.psum_rows)
            & (mode != 3)
            & ((mode != isa.VecMode.ADD) | (insn.win >= 2)))


def vec_cycles(insn, config: AccelConfig) -> int:
    """Acceptance to ``done`` / ``error`` of the VEC ``insn`` (field name -> int, missing
    = 0) on :class:`VectorEngine`, the timing of its docstring: 1 for an instruction
    failing :func:`vec_insn_ok` or with ``m_len = 0`` or ``win = 0``; MAX / SUM
    ``m_len * win + 5``; ADD ``(m_len - 1) * max(win, L) + max(win + 2, L + 10)``
    (``L = min(rows, cols)``). The next instruction can be accepted one cycle later."""
    f = {name: int(insn.get(name, 0)) for name in ("m_len", "win", "lanes", "ifmap_row", "psum_row")}
    mode = insn.get("mode", 0)
    mode = getattr(mode, "value", mode)
    add = mode == isa.VecMode.ADD.value
    lanes = min(config.rows, config.cols)
    ok = (f["lanes"] <= lanes and f["ifmap_row"] + f["m_len"] * f["win"] <= config.ifmap_rows
          and f["psum_row"] + f["m_len"] <= config.psum_rows and mode != 3
          and (not add or f["win"] >= 2))
    if not ok or f["m_len"] == 0 or f["win"] == 0:
        return 1
    m_len, win = f["m_len"], f["win"]
    if add:   # the last window's reads, then its last lane's write and done (docstring)
        return (m_len - 1) * max(win, lanes) + max(win + 2, VectorEngine.PIPELINE_ADD + lanes + 3)
    return m_len * win + 2 + VectorEngine.PIPELINE_MAX_SUM


class VectorEngine(ControlledEngine):
    """Pooling / residual-add engine for :data:`~celosia.rtl.isa.VecInsn`.

    ``L = min(rows, cols)`` lanes: lane ``l`` of an ifmap row (int8) feeds lane
    ``l`` of a psum row (int32). For ``m < m_len``, ``l < lanes``, with
    ``x_j = int8(ifmap[ifmap_row + m*win + j][l])``::

        MAX: psum[psum_row+m][l] = max_j x_j - in_zp
        SUM: psum[psum_row+m][l] = sum_j (x_j - in_zp)
        ADD: psum[psum_row+m][l] = MBQM(wrap32((x_0 - in_zp) << left_shift), a_m0, a_shift)
                                   + MBQM(wrap32((x_1 - b_zp) << left_shift), b_m0, b_shift)

    int32 wrapping; MBQM is the PPU's (:func:`celosia.rtl.ppu.mbqm_stages`, any
    shift). Lanes ``>= lanes`` are not written (write enables). MAX and SUM work on
    all lanes at once; ADD's two MBQMs are shared by the lanes, one lane per cycle
    (chosen when the DMA brought a byte per cycle, so a residual add never waited on
    them, and ``2 * L`` MBQM pipelines were a quarter of the Verilator model's run
    time; with the word-wide DMA an ADD of ``L`` lanes takes ``L`` cycles per row while
    its two input rows load in about ``2 * L / 8``).

    Ports
    -----
    ctrl : In(EngineSignature(VecInsn))
        The controller side (:class:`~celosia.rtl.controller.signatures.EngineSignature`);
        its members are also attributes of the engine (``engine.insn`` is
        ``engine.ctrl.insn``, ...):

        insn : In(stream.Signature(VecInsn))
            ``ready`` exactly when idle.
        done : Out(1)
            One-cycle pulse one cycle after the last psum row was written.
        error : Out(1)
            One-cycle pulse instead of ``done`` when :func:`vec_insn_ok` fails
            (lanes > min(rows, cols), rows past a buffer, mode 3, ADD with
            win < 2); nothing is read or written.
        busy : Out(1)
            High from the cycle after acceptance up to and including the
            ``done`` / ``error`` cycle.
    ifmap : Out(BufferReadSignature(ifmap_rows, rows*8))
    psum_wr : Out(BufferWriteSignature(psum_rows, cols, 32))

    Timing (cycle 0 = the cycle ``insn.valid & insn.ready``):

    * cycle 1 (CHECK): :func:`vec_insn_ok` (computed at acceptance and registered);
      failing -> ``error`` in this cycle; ``m_len = 0`` or ``win = 0`` -> ``done`` in this
      cycle, nothing written.
    * cycles 2 .. m_len*win + 1 (RUN): ifmap rows ``ifmap_row .. ifmap_row +
      m_len*win - 1`` are read, one per cycle.
    * a row read in cycle ``t`` arrives at ``t+1``, where it is registered (issue 15:
      the buffer's block RAM output went through the lane arithmetic into the
      accumulators in one cycle, the board's critical path), and is folded into the lane
      accumulators at ``t+2``. MAX / SUM: an output row is written in cycle ``t+3``
      after the read ``t`` of its window's last row (``PIPELINE_MAX_SUM``); ``done``
      pulses in cycle ``m_len*win + 5``.
    * ADD: ``x_0`` is held, and at the fold of ``x_1`` (read in ``t``) both
      shifted operands of every lane are registered (``t+3``); lane ``k`` enters
      the 4 MBQM stages in cycle ``t+3+k`` and is written in ``t+7+k``
      (``PIPELINE_ADD + k``). A window takes ``P = max(win, L)`` cycles (its
      ``win`` reads, then ``P - win`` idle cycles, so that the next window's
      operands arrive after the last lane of this one has entered the MBQMs):
      window ``m``'s rows are read from cycle ``2 + m*P``, and ``done`` pulses in
      cycle ``(m_len - 1)*P + max(win + 2, L + 10)``, one cycle after the last
      lane's write (or after the last read, for long windows).
    * The next instruction can be accepted in the cycle after ``done``.
    """

    #: Cycles from the read of a window's last row to its psum write (MAX / SUM): the
    #: row's arrival, its register, the fold.
    PIPELINE_MAX_SUM = 3
    #: Cycles from the read of a window's row ``x_1`` to the psum write of its lane 0 (ADD);
    #: lane ``k`` is written ``k`` cycles later.
    PIPELINE_ADD = 3 + MBQM_STAGES

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "ctrl": In(EngineSignature(isa.VecInsn)),
            "ifmap": Out(BufferReadSignature(config.ifmap_rows, config.rows * config.act_bits)),
            "psum_wr": Out(BufferWriteSignature(config.psum_rows, config.cols, config.acc_bits)),
        })

    @property
    def config(self):
        return self._config

    @property
    def lanes(self):
        """Lanes the engine computes: ``min(rows, cols)``."""
        return min(self._config.rows, self._config.cols)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        ab, acc_bits = cfg.act_bits, cfg.acc_bits
        nl = self.lanes

        insn = Signal(isa.VecInsn)
        mode = insn.mode.as_value()
        is_add = mode == isa.VecMode.ADD
        is_max = mode == isa.VecMode.MAX
        j_cnt = Signal(16)
        m_cnt = Signal(16)
        rd_addr = Signal(range(cfg.ifmap_rows))
        # Cycles after the last read until done (see the timing in the docstring); ADD
        # windows shorter than L are followed by L - win idle cycles.
        add_lat = self.PIPELINE_ADD + 1 + nl  # done = last lane's write + 1, counted from x_0's read
        drain = Signal(range(add_lat + 1))
        lat = Mux(is_add, Mux(insn.win < add_lat, add_lat - insn.win, 0), self.PIPELINE_MAX_SUM)
        gap = Signal(range(nl + 1))
        gap_len = Mux(is_add & (insn.win < nl), nl - insn.win, 0)

        # Read cycle t (s0) -> data at t+1 (d1), registered -> t+2 (d2): fold into the
        # accumulators.
        s0_valid = Signal()
        d1_valid, d1_first, d1_last, d1_x1 = Signal(), Signal(), Signal(), Signal()
        d1_row = Signal(16)
        m.d.sync += [
            d1_valid.eq(s0_valid),
            d1_first.eq(j_cnt == 0),
            d1_last.eq(j_cnt == insn.win - 1),
            d1_x1.eq(j_cnt == 1),
            d1_row.eq(insn.psum_row + m_cnt),
        ]
        d2_valid, d2_first, d2_last, d2_x1 = Signal(), Signal(), Signal(), Signal()
        d2_row = Signal(16)
        d2_x = Signal(nl * ab)
        m.d.sync += [d2_valid.eq(d1_valid), d2_first.eq(d1_first), d2_last.eq(d1_last),
                     d2_x1.eq(d1_x1), d2_row.eq(d1_row), d2_x.eq(self.ifmap.data[:nl * ab])]
        # MAX / SUM write stage (t+3) and ADD write stage (t+7): valid and row.
        ms_valid = Signal()
        ms_row = Signal(16)
        m.d.sync += [ms_valid.eq(d2_valid & d2_last & ~is_add), ms_row.eq(d2_row)]

        in_zp = insn.in_zp.as_signed()
        zp = Mux(is_add & ~d2_first, insn.b_zp.as_signed(), in_zp)
        ls = insn.left_shift
        acc = [Signal(signed(acc_bits), name=f"acc_{l}") for l in range(nl)]
        a_ops = Array(Signal(signed(32), name=f"a_in_{l}") for l in range(nl))
        b_ops = Array(Signal(signed(32), name=f"b_in_{l}") for l in range(nl))
        capture = Signal()
        m.d.comb += capture.eq(d2_valid & d2_x1 & is_add)
        for l in range(nl):
            x = d2_x[l * ab:(l + 1) * ab].as_signed()
            val = Signal(signed(ab + 1), name=f"val_{l}")
            m.d.comb += val.eq(x - zp)
            with m.If(d2_valid):
                with m.If(d2_first):
                    m.d.sync += acc[l].eq(val)
                with m.Elif(is_max):
                    m.d.sync += acc[l].eq(Mux(val > acc[l], val, acc[l]))
                with m.Else():
                    m.d.sync += acc[l].eq(acc[l] + val)  # assignment wraps to int32
            # ADD: at x_1's fold, x_0 - in_zp is in acc; both operands are shifted and
            # registered for every lane.
            with m.If(capture):
                m.d.sync += [a_ops[l].eq((acc[l] << ls)[:32]), b_ops[l].eq((val << ls)[:32])]

        # ADD: the lanes go through one pair of MBQM pipelines (the PPU's), one per cycle.
        ser_k = Signal(range(nl + 1), init=nl)  # lane entering the MBQMs; nl: none
        ser_row = Signal(16)
        with m.If(capture):
            m.d.sync += [ser_k.eq(0), ser_row.eq(d2_row)]
        with m.Elif(ser_k != nl):
            m.d.sync += ser_k.eq(ser_k + 1)
        a_out = mbqm_stages(m, Const(1), a_ops[ser_k[:max(1, (nl - 1).bit_length())]],
                            insn.a_m0.as_signed(), insn.a_shift.as_signed(), prefix="a_",
                            valid=(1, ser_k != nl), lane=(range(nl), ser_k), row=(16, ser_row))
        b_out = mbqm_stages(m, Const(1), b_ops[ser_k[:max(1, (nl - 1).bit_length())]],
                            insn.b_m0.as_signed(), insn.b_shift.as_signed(), prefix="b_")
        add_sum = Signal(acc_bits)
        m.d.comb += add_sum.eq(a_out["x"] + b_out["x"])  # wraps to int32

        lane_en = Cat(insn.lanes > l for l in range(nl))
        with m.If(is_add):
            m.d.comb += [self.psum_wr.addr.eq(a_out["row"]),
                         self.psum_wr.data.eq(Cat([add_sum] * nl))]
            with m.If(a_out["valid"] & (insn.lanes > a_out["lane"])):
                m.d.comb += self.psum_wr.en.eq(Const(1, nl) << a_out["lane"])
        with m.Else():
            m.d.comb += [self.psum_wr.addr.eq(ms_row), self.psum_wr.data.eq(Cat(*acc))]
            with m.If(ms_valid):
                m.d.comb += self.psum_wr.en.eq(lane_en)

        m.d.comb += [self.ifmap.addr.eq(rd_addr), self.ifmap.en.eq(s0_valid)]

        # vec_insn_ok of the offered instruction, registered with it at acceptance: CHECK
        # reads a flip-flop (issue 15: the check's multiply and compare, then the
        # controller's error path, were the accelerator's critical path). No cycle added.
        ok = Signal()
        with m.If(self.insn.valid & self.insn.ready):
            m.d.sync += ok.eq(vec_insn_ok(self.insn.payload, cfg))

        with m.FSM():
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, ok, (insn.m_len == 0) | (insn.win == 0)):
                m.d.sync += [j_cnt.eq(0), m_cnt.eq(0), drain.eq(0), gap.eq(0),
                             rd_addr.eq(insn.ifmap_row)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), s0_valid.eq(1)]
                m.d.sync += rd_addr.eq(rd_addr + 1)
                with m.If(j_cnt == insn.win - 1):
                    m.d.sync += [j_cnt.eq(0), m_cnt.eq(m_cnt + 1)]
                    with m.If(m_cnt == insn.m_len - 1):
                        m.next = "DRAIN"
                    with m.Elif(gap_len != 0):
                        m.next = "GAP"
                with m.Else():
                    m.d.sync += j_cnt.eq(j_cnt + 1)
            with m.State("GAP"):
                # ADD windows shorter than L: wait until this window's last lane has
                # entered the MBQMs before the next window's operands are registered.
                m.d.comb += self.busy.eq(1)
                m.d.sync += gap.eq(gap + 1)
                with m.If(gap == gap_len - 1):
                    m.d.sync += gap.eq(0)
                    m.next = "RUN"
            with m.State("DRAIN"):
                # The last row's pipeline, then done one cycle after its write.
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == lat):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
