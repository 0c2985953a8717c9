"""The interface every compute engine (dataflow) implements, and what they share.

``ComputeEngineSignature(config)`` is the contract between the controller, the
buffers and a PE array (``ws``, ``os``, ``rs``, ``feie``): see
docs/hardware.md, "Compute engine". :func:`gemm_insn_in_range` is the bounds
check every engine applies to an accepted :data:`GemmInsn` before touching a
buffer; :func:`legal_gemm` is where each engine's ``cycles()`` timing starts.
"""

from __future__ import annotations

import functools
import operator
from contextlib import contextmanager
from types import SimpleNamespace

from amaranth.hdl import Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.buffers import BufferReadSignature, BufferWriteSignature
from celosia.rtl.config import FEIE_TAPS, RS_SPAD, AccelConfig, check_config
from celosia.rtl.controller.signatures import EngineSignature, GemmPre, gemm_pre
from celosia.rtl.dataflows import dataflow, ifmap_read_ports, psum_write_ports

__all__ = ["ComputeEngineSignature", "ComputeEngine", "ControlledEngine", "gemm_insn_in_range",
           "gemm_check_register", "legal_gemm", "insn_check_state", "finish_states"]


class ComputeEngineSignature(wiring.Signature):
    """Ports of a compute engine (the engine's point of view).

    Members
    -------
    ctrl : In(EngineSignature(GemmInsn, zero_skips=True, pre=GemmPre))
        The controller side (:class:`~celosia.rtl.controller.signatures.EngineSignature`);
        a :class:`ComputeEngine` also has its members as attributes
        (``engine.insn`` is ``engine.ctrl.insn``, ...):

        insn : In(stream.Signature(GemmInsn))
            One GEMM; ``ready`` is high while the engine can take one: ``feie`` also
            while one GEMM runs and none waits (its weights landed, its groups not all
            done); the ``ws`` engine is also ready while earlier GEMMs are still
            streaming, ``os`` while earlier GEMMs are in the block pipeline, ``rs`` during
            the current GEMM's last pass (each at most its ``MAX_IN_FLIGHT``,
            :data:`~celosia.rtl.controller.signatures.GEMMS_IN_FLIGHT` or fewer, in flight).
        done : Out(1)
            One-cycle pulse one cycle after the last psum row of an accepted
            instruction was written (a following reader sees every write). Each
            accepted instruction gets one ``done`` or ``error``, in acceptance order.
        error : Out(1)
            One-cycle pulse instead of ``done`` when the instruction fails
            :func:`gemm_insn_in_range`; nothing is read or written then.
        busy : Out(1)
            High while an accepted instruction has not completed: from the cycle
            after its acceptance up to and including its ``done`` / ``error`` cycle.
        pre : In(GemmPre)
            The GEMM's :func:`~celosia.rtl.controller.signatures.gemm_pre` products,
            valid with ``insn.payload`` (computed as it entered the compute queue); the
            range check in the acceptance cycle reads them (:func:`gemm_check_register`).
        zero_skips : Out(16)
            MAC cycles skipped for zero inputs (feie: the inputs of a pixel equal to the
            zero point, reported as the pixel lands; always 0 for the dense arrays); the
            controller sums it into ZERO_SKIPS.
        mac_cycles : Out(1)
            High in a cycle in which the array multiplies an input (feie: some group takes
            a non-zero input; 0 on the dense arrays); the controller counts it in
            MAC_CYCLES.
    ifmap : Out(BufferReadSignature(ifmap_rows, rows*8))
        Ifmap buffer read port 0 (shared with the vector engine in the top).
    ifmap1 : Out(BufferReadSignature(ifmap_rows, rows*8))
        Only where :func:`~celosia.rtl.dataflows.ifmap_read_ports` is 2 (``feie`` with
        ``feie_read_ports = 2``): a second read port, the buffer's read port 1.
    weight : Out(BufferReadSignature(weight_rows, cols*8))
    psum_rd : Out(BufferReadSignature(psum_rows, cols*32))
        Psum buffer read port 0 (accumulate reads).
    psum_wr : Out(BufferWriteSignature(psum_rows, cols, 32))
    psum_rd1, psum_wr1 : Out(BufferReadSignature(psum_rows, cols*32)), Out(BufferWriteSignature(psum_rows, cols, 32))
        Only where :func:`~celosia.rtl.dataflows.psum_write_ports` is 2 (``feie`` with
        ``feie_write_ports = 2``): a second psum write port (the buffer's write port 1)
        and its accumulate read port (the buffer's read port 2), the engine's own.
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        ifmap = BufferReadSignature(config.ifmap_rows, config.rows * config.act_bits)
        members = {
            "ctrl": In(EngineSignature(isa.GemmInsn, zero_skips=True, pre=GemmPre)),
            "ifmap": Out(ifmap),
            "weight": Out(BufferReadSignature(config.weight_rows, config.cols * config.weight_bits)),
            "psum_rd": Out(BufferReadSignature(config.psum_rows, config.cols * config.acc_bits)),
            "psum_wr": Out(BufferWriteSignature(config.psum_rows, config.cols, config.acc_bits)),
        }
        if ifmap_read_ports(config) == 2:
            members["ifmap1"] = Out(ifmap)
        if psum_write_ports(config) == 2:
            members["psum_rd1"] = Out(BufferReadSignature(config.psum_rows, config.cols * config.acc_bits))
            members["psum_wr1"] = Out(BufferWriteSignature(config.psum_rows, config.cols, config.acc_bits))
        super().__init__(members)

    @property
    def config(self):
        return self._config

    def __eq__(self, other):
        return isinstance(other, ComputeEngineSignature) and self.config == other.config

    def __hash__(self):
        return hash((ComputeEngineSignature, self.config))

    def __repr__(self):
        return f"ComputeEngineSignature({self.config!r})"


def gemm_insn_in_range(insn, config: AccelConfig, pre=None):
    """The GEMM ``insn`` is legal for ``config`` and stays inside every buffer.

    ``insn`` is a ``GemmInsn`` view (the result is a 1-bit Amaranth expression) or any
    object with the fields as Python int attributes (the result is a ``bool``): the
    RTL engines and the ISA simulator apply the same rules.

    Always: ``in_zp`` is 0 except where the GEMM carries the zero point (``feie``; the
    trait ``zero_point_in_gemm`` of :mod:`celosia.rtl.dataflows`), ``k_len <= rows``,
    ``n_len <= cols``, ``psum_row + m_len <= psum_rows``. Which forms are legal is the
    dataflow's ``gemm_window`` trait: ``"tap"`` (ws, os) takes plain GEMMs and
    windowed GEMMs of a 1x1 window, ``"full"`` (rs) only windowed GEMMs.

    Plain GEMM (``window = 0``): ``ifmap_row + m_len <= ifmap_rows``,
    ``weight_row + k_len <= weight_rows``.

    Windowed GEMM (``window = 1``, :data:`~celosia.rtl.isa.GemmInsn`): ``win_h, win_w,
    stride_*, dil_*, out_h, out_w, k_len >= 1``; ``m_len = out_h * out_w``;
    ``weight_row + win_h*win_w*k_len <= weight_rows``; its last ifmap row (``e = out_h-1``,
    ``x = out_w-1``, the last tap) inside the buffer. On ``"tap"`` engines also
    ``win_h = win_w = 1`` (a larger window is an error like any out-of-range GEMM). On
    ``"full"`` engines (rs) also ``win_h <= rows``; ``out_h <= cols``; the ifmap lines it
    touches, ``(out_h-1)*stride_h + (win_h-1)*dil_h + 1 <= rs_lines``; ``win_w * k_len <=
    RS_SPAD`` (one bank of the rs filter scratchpad, which has two).

    ``"row"`` (feie, :class:`~celosia.rtl.arrays.feie.FEIEArray`)
    takes plain GEMMs and windowed GEMMs of one kernel row: ``win_h = 1``, ``win_w <=
    FEIE_TAPS`` (3), and for ``win_w > 1`` also either ``dil_w = 1`` and ``stride_w <=
    win_w`` (consecutive taps), or ``dil_w = stride_w`` (a *phase set*: taps ``d`` pixels
    apart at stride ``d``, output ``x`` over pixels ``(x + fw)*d``, so consecutive outputs
    share ``win_w - 1`` pixels as at stride 1); the outputs one pixel reaches, ``P = 1 + (s
    <= win_w-1) + (2*s <= win_w-1)`` with ``s = stride_w`` for ``dil_w = 1`` and ``s = 1``
    for ``dil_w = stride_w > 1`` (1 for ``win_w = 1``), at most ``rows``; its last ifmap row
    (``e = out_h-1``, ``x = out_w-1``, ``fw = win_w-1``) inside the buffer.

    Applied regardless of ``m_len``: an instruction with ``m_len = 0`` but a start row
    past the end is an error too.

    ``pre``: the instruction's :data:`~celosia.rtl.controller.signatures.GemmPre` (a view),
    to use instead of multiplying its fields again; ``None`` computes them
    (:func:`~celosia.rtl.controller.signatures.gemm_pre`). The same rules either way.
    """
    c = config
    traits = dataflow(c.dataflow)
    kind = traits.gemm_window
    full = kind == "full"
    conds = [insn.k_len <= c.rows, insn.n_len <= c.cols,
             (insn.in_zp == 0) | traits.zero_point_in_gemm,
             insn.psum_row + insn.m_len <= c.psum_rows]
    win = [insn.win_h >= 1, insn.win_w >= 1, insn.stride_h >= 1, insn.stride_w >= 1,
           insn.dil_h >= 1, insn.dil_w >= 1, insn.out_h >= 1, insn.out_w >= 1,
           insn.k_len >= 1]
    p = SimpleNamespace(**(gemm_pre(insn) if pre is None else {k: pre[k] for k in GemmPre.members}))
    if full:
        lines_m1 = p.h_step + p.v_step
        last_row = insn.ifmap_row + lines_m1 * insn.row_pitch + p.x_span + p.w_span
        conds += win + [insn.m_len == p.m_prod,
                        insn.weight_row + p.taps_hw * insn.k_len <= c.weight_rows,
                        insn.window == 1, insn.win_h <= c.rows, insn.out_h <= c.cols,
                        lines_m1 < c.rs_lines, p.taps_k <= RS_SPAD,
                        last_row < c.ifmap_rows]
    elif kind == "row":
        # win_h = 1 makes the weight rows win_h*win_w*k_len = win_w*k_len
        win += [insn.m_len == p.m_prod, insn.weight_row + p.taps_k <= c.weight_rows]
        wide = insn.win_w > 1
        # a phase set (dil_w = stride_w > 1) steps one pixel of its own per output (s = 1)
        phase = insn.dil_w != 1
        n_pe = (1 + (wide & (phase | (insn.stride_w <= insn.win_w - 1)))
                + (wide & ((phase & (insn.win_w >= 3)) | (2 * insn.stride_w <= insn.win_w - 1))))
        last_row = insn.ifmap_row + p.h_step * insn.row_pitch + p.x_span + p.w_span
        row = _all(win + [insn.win_h == 1, insn.win_w <= FEIE_TAPS, last_row < c.ifmap_rows,
                          (insn.win_w == 1) | ((insn.dil_w == 1) & (insn.stride_w <= insn.win_w))
                          | (insn.dil_w == insn.stride_w),
                          n_pe <= c.rows])
        plain = _all([insn.ifmap_row + insn.m_len <= c.ifmap_rows,
                      insn.weight_row + insn.k_len <= c.weight_rows])
        conds.append(((insn.window == 1) & row) | ((insn.window == 0) & plain))
    else:
        # one tap: the dil_* terms of the last row vanish, and win_h = win_w = 1 makes the
        # weight rows win_h*win_w*k_len = k_len
        win += [insn.m_len == p.m_prod, insn.weight_row + insn.k_len <= c.weight_rows]
        last_row = insn.ifmap_row + p.h_step * insn.row_pitch + p.x_span
        tap = _all(win + [insn.win_h == 1, insn.win_w == 1, last_row < c.ifmap_rows])
        plain = _all([insn.ifmap_row + insn.m_len <= c.ifmap_rows,
                      insn.weight_row + insn.k_len <= c.weight_rows])
        conds.append(((insn.window == 1) & tap) | ((insn.window == 0) & plain))
    return _all(conds)


def gemm_check_register(m, loads, config: AccelConfig, name="insn_ok"):
    """The range check of an engine's instruction register, as a register (issue 15: the
    single-cycle check between the instruction register and ``error`` was the
    accelerator's critical path, through the controller's error latch).

    ``loads``: ``(cond, source)`` pairs, later ones winning (as ``m.If`` blocks): in a cycle
    in which ``cond`` is high the engine loads its instruction register from ``source``:
    either the offered instruction, as the pair ``(payload, pre)``
    (:attr:`ComputeEngine.offered`: the ``GemmInsn`` view and its
    :data:`~celosia.rtl.controller.signatures.GemmPre`, registers of the controller's
    queue: :func:`gemm_insn_in_range` is computed from them in that cycle, one multiply
    deep, and registered), or the register an earlier call returned (copied). Returns a
    1-bit register equal to :func:`gemm_insn_in_range` of the instruction register from
    the cycle after the load for as long as that holds: the CHECK cycle reads a
    flip-flop. No cycle added."""
    ok = Signal(name=name)
    for cond, src in loads:
        with m.If(cond):
            if isinstance(src, Signal):
                m.d.sync += ok.eq(src)
            else:
                insn, pre = src
                m.d.sync += ok.eq(gemm_insn_in_range(insn, config, pre=pre))
    return ok


def _all(conds):
    """The conjunction of ``conds`` (bools or 1-bit Amaranth expressions)."""
    return functools.reduce(operator.and_, conds)


#: Every GemmInsn field at 0 (the layout's ``members`` is rebuilt on each access: this is
#: legal_gemm's hot path in the cycle model).
_GEMM_ZEROS = dict.fromkeys(isa.GemmInsn.members, 0)


def legal_gemm(insn, config: AccelConfig):
    """The GEMM ``insn`` (a mapping of :data:`~celosia.rtl.isa.GemmInsn` field names to
    Python ints, a missing field = 0) as an object with those attributes if it passes
    :func:`gemm_insn_in_range` for ``config``, else ``None``: the start of every
    engine's ``cycles(insn, config, ifmap=None)``."""
    fields = dict(_GEMM_ZEROS)
    fields.update(insn)
    g = SimpleNamespace(**fields)
    return g if gemm_insn_in_range(g, config) else None


class ControlledEngine(wiring.Component):
    """A component whose signature has the controller side as one member, ``ctrl``
    (an ``In(EngineSignature(...))``), with that member's ports also as attributes:
    ``self.insn`` is ``self.ctrl.insn``, and so on for ``done``, ``error``, ``busy``
    and ``zero_skips`` where the signature has them."""

    def __getattr__(self, name):
        # only called for names not found otherwise: the ports of the ctrl member
        ctrl = self.__dict__.get("ctrl")
        if ctrl is not None and name in ctrl.signature.members:
            return getattr(ctrl, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class ComputeEngine(ControlledEngine):
    """Base of the PE arrays: a component with :class:`ComputeEngineSignature` for ``config``.

    ``blocks``: ``None`` (the default) writes the array's repeated PE columns / rows
    inline; a dict makes them instances of separately converted modules, recorded there
    (:func:`celosia.rtl.arrays.blocks.place`; the Verilog path). Same circuit either way.
    """

    def __init__(self, config: AccelConfig, blocks: dict | None = None):
        self._config = check_config(config)
        self._blocks = blocks
        super().__init__(ComputeEngineSignature(config))

    @property
    def config(self):
        return self._config

    @property
    def offered(self):
        """The offered GEMM and its products, ``(insn.payload, pre)``: a source of
        :func:`gemm_check_register`."""
        return self.insn.payload, self.pre


def offered_sequence(timer, insns, gaps=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` through ``timer`` (an engine's
    timing one GEMM at a time: ``timer.accept_at(c)``, the first cycle from ``c`` on in
    which the engine takes a GEMM, and ``timer.accept(insn, a)``, the end of one taken in
    ``a``). Instruction ``i`` is offered (``valid`` held high until accepted) from the cycle
    ``gaps[i]`` cycles after the acceptance cycle of instruction ``i-1`` plus one (the first
    from cycle ``gaps[0]``); ``gaps`` defaults to all 0 (back to back)."""
    gaps = [0] * len(insns) if gaps is None else gaps
    out = []
    prev_accept = None
    for insn, gap in zip(insns, gaps, strict=True):
        offer = gap if prev_accept is None else prev_accept + 1 + gap
        a = timer.accept_at(offer)
        out.append((a, timer.accept(insn, a)))
        prev_accept = a
    return out


@contextmanager
def insn_check_state(m, engine, ok, empty):
    """The CHECK state of a compute-queue engine (the cycle after acceptance): ``error``
    if ``ok`` is low, ``done`` if ``empty``, both back to IDLE; otherwise the body of the
    ``with`` runs (it chooses the next state). ``busy`` is high."""
    with m.State("CHECK"):
        m.d.comb += engine.busy.eq(1)
        with m.If(~ok):
            m.d.comb += engine.error.eq(1)
            m.next = "IDLE"
        with m.Elif(empty):
            m.d.comb += engine.done.eq(1)
            m.next = "IDLE"
        with m.Else():
            yield


def finish_states(m, engine):
    """States FLUSH (the cycle of the last psum write) and DONE (``done``, back to IDLE) that
    end an instruction of the engines whose last write lands the cycle after its issue."""
    with m.State("FLUSH"):
        m.d.comb += engine.busy.eq(1)
        m.next = "DONE"
    with m.State("DONE"):
        m.d.comb += [engine.busy.eq(1), engine.done.eq(1)]
        m.next = "IDLE"
