"""Vector engine: lane-wise max / sum / residual add of ifmap rows into the psum buffer.

Executes :data:`~celosia.rtl.isa.VecInsn` (pooling and residual add) on the
compute queue, next to the PE array; the controller never runs both at once, so
the top shares the ifmap read port and the psum write port between them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.buffers import BufferReadSignature, BufferWriteSignature
from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.dma import accept_state
from celosia.rtl.ppu import MBQM_STAGES, mbqm_stages

__all__ = ["VectorEngine", "vec_insn_ok"]


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


class VectorEngine(wiring.Component):
    """Pooling / residual-add engine for :data:`~celosia.rtl.isa.VecInsn`.

    ``L = min(rows, cols)`` lanes: lane ``l`` of an ifmap row (int8) feeds lane
    ``l`` of a psum row (int32). For ``m < m_len``, ``l < lanes``, with
    ``x_j = int8(ifmap[ifmap_row + m*win + j][l])``::

        MAX: psum[psum_row+m][l] = max_j x_j - in_zp
        SUM: psum[psum_row+m][l] = sum_j (x_j - in_zp)
        ADD: psum[psum_row+m][l] = MBQM(wrap32((x_0 - in_zp) << left_shift), a_m0, a_shift)
                                   + MBQM(wrap32((x_1 - b_zp) << left_shift), b_m0, b_shift)

    int32 wrapping; MBQM is the PPU's (:func:`celosia.rtl.ppu.mbqm_stages`, any
    shift). Lanes ``>= lanes`` are not written (write enables).

    Ports
    -----
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

    * cycle 1 (CHECK): :func:`vec_insn_ok`; failing -> ``error`` in this cycle;
      ``m_len = 0`` or ``win = 0`` -> ``done`` in this cycle, nothing written.
    * cycles 2 .. m_len*win + 1 (RUN): ifmap rows ``ifmap_row .. ifmap_row +
      m_len*win - 1`` are read, one per cycle.
    * a row read in cycle ``t`` arrives at ``t+1`` and is folded into the lane
      accumulators. MAX / SUM: an output row is written in cycle ``t+2`` after
      the read ``t`` of its window's last row (``PIPELINE_MAX_SUM``). ADD: ``x_0``
      is held, and at the arrival of ``x_1`` (read in ``t``) both shifted
      operands are registered (``t+2``), go through the 4 MBQM stages and the sum
      is written in cycle ``t+6`` (``PIPELINE_ADD``).
    * ``done`` pulses ``PIPELINE + 1`` cycles after the last read, i.e. in
      cycle ``m_len*win + 2 + PIPELINE``: ``m_len*win + 4`` for MAX / SUM,
      ``m_len*win + 8`` for ADD. The next instruction can be accepted in the
      cycle after ``done``.
    """

    #: Cycles from the read of a window's last row to its psum write (MAX / SUM).
    PIPELINE_MAX_SUM = 2
    #: Cycles from the read of a window's row ``x_1`` to its psum write (ADD).
    PIPELINE_ADD = 2 + MBQM_STAGES

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "insn": In(stream.Signature(isa.VecInsn)),
            "done": Out(1),
            "error": Out(1),
            "busy": Out(1),
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
        drain = Signal(range(self.PIPELINE_ADD + 1))
        lat = Mux(is_add, self.PIPELINE_ADD, self.PIPELINE_MAX_SUM)

        # Read cycle t (s0) -> data at t+1 (d1): fold into the accumulators.
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
        # MAX / SUM write stage (t+2) and ADD write stage (t+6): valid and row.
        ms_valid = Signal()
        ms_row = Signal(16)
        m.d.sync += [ms_valid.eq(d1_valid & d1_last & ~is_add), ms_row.eq(d1_row)]
        add_valid = [Signal(name=f"add_v{k}") for k in range(self.PIPELINE_ADD - 1)]
        add_row = [Signal(16, name=f"add_row{k}") for k in range(self.PIPELINE_ADD - 1)]
        m.d.sync += [add_valid[0].eq(d1_valid & d1_x1 & is_add), add_row[0].eq(d1_row)]
        for k in range(1, len(add_valid)):
            m.d.sync += [add_valid[k].eq(add_valid[k - 1]), add_row[k].eq(add_row[k - 1])]

        in_zp = insn.in_zp.as_signed()
        zp = Mux(is_add & ~d1_first, insn.b_zp.as_signed(), in_zp)
        ls = insn.left_shift
        acc = [Signal(signed(acc_bits), name=f"acc_{l}") for l in range(nl)]
        add_sum = []
        for l in range(nl):
            x = self.ifmap.data[l * ab:(l + 1) * ab].as_signed()
            val = Signal(signed(ab + 1), name=f"val_{l}")
            m.d.comb += val.eq(x - zp)
            with m.If(d1_valid):
                with m.If(d1_first):
                    m.d.sync += acc[l].eq(val)
                with m.Elif(is_max):
                    m.d.sync += acc[l].eq(Mux(val > acc[l], val, acc[l]))
                with m.Else():
                    m.d.sync += acc[l].eq(acc[l] + val)  # assignment wraps to int32
            # ADD: at x_1's arrival, x_0 - in_zp is in acc; both operands are shifted and
            # registered, then each goes through the PPU's MBQM stages.
            a_in = Signal(signed(32), name=f"a_in_{l}")
            b_in = Signal(signed(32), name=f"b_in_{l}")
            with m.If(d1_valid & d1_x1):
                m.d.sync += [a_in.eq((acc[l] << ls)[:32]), b_in.eq((val << ls)[:32])]
            a_out = mbqm_stages(m, Const(1), a_in, insn.a_m0.as_signed(), insn.a_shift.as_signed(),
                                prefix=f"a{l}_")
            b_out = mbqm_stages(m, Const(1), b_in, insn.b_m0.as_signed(), insn.b_shift.as_signed(),
                                prefix=f"b{l}_")
            add_sum.append((a_out["x"] + b_out["x"])[:acc_bits])

        lane_en = Cat(insn.lanes > l for l in range(nl))
        with m.If(is_add):
            m.d.comb += [self.psum_wr.addr.eq(add_row[-1]),
                         self.psum_wr.data.eq(Cat(*add_sum))]
            with m.If(add_valid[-1]):
                m.d.comb += self.psum_wr.en.eq(lane_en)
        with m.Else():
            m.d.comb += [self.psum_wr.addr.eq(ms_row), self.psum_wr.data.eq(Cat(*acc))]
            with m.If(ms_valid):
                m.d.comb += self.psum_wr.en.eq(lane_en)

        m.d.comb += [self.ifmap.addr.eq(rd_addr), self.ifmap.en.eq(s0_valid)]

        with m.FSM():
            accept_state(m, self.insn, insn)
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [j_cnt.eq(0), m_cnt.eq(0), drain.eq(0), rd_addr.eq(insn.ifmap_row)]
                with m.If(~vec_insn_ok(insn, cfg)):
                    m.d.comb += self.error.eq(1)
                    m.next = "IDLE"
                with m.Elif((insn.m_len == 0) | (insn.win == 0)):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), s0_valid.eq(1)]
                m.d.sync += rd_addr.eq(rd_addr + 1)
                with m.If(j_cnt == insn.win - 1):
                    m.d.sync += [j_cnt.eq(0), m_cnt.eq(m_cnt + 1)]
                    with m.If(m_cnt == insn.m_len - 1):
                        m.next = "DRAIN"
                with m.Else():
                    m.d.sync += j_cnt.eq(j_cnt + 1)
            with m.State("DRAIN"):
                # The last row's pipeline, then done one cycle after its write.
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == lat):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
