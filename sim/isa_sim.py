"""Instruction-level functional simulator of the ISA (no timing).

Executes a program image exactly as ``rtl/isa.py`` defines each instruction,
with the three queues and the dependency tokens. Two orders:

* :meth:`IsaSim.run`, the functional order: it chooses among the queue heads that may
  start in an order given by ``seed`` (round robin when ``None``). A program whose
  tokens are missing produces wrong results under some orders, so compiler tests run
  several seeds. Used to test the compiler without RTL; it raises :class:`IsaError`
  with the hardware's error code for what does not depend on the order (ILLEGAL_OPCODE,
  BAD_DESCRIPTOR, DMA_OUT_OF_WINDOW, BUFFER_OUT_OF_RANGE) and for what happens in its
  own order (TOKEN_OVERFLOW, TOKEN_DEADLOCK, with queues of ``queue_depth`` filled in
  program order), and it has a step limit (WATCHDOG past ``max_work``).
* the RTL's order: :func:`celosia.sim.perf.run` (the cycle model) executes each
  instruction on an :class:`IsaSim` in the cycle the RTL issues it, fetches each word
  from DRAM when the RTL does (a program that overwrites its own instructions behaves
  the same) and stops as the RTL stops: the same error, ERROR_INFO and FAULT_ADDR in the
  same cycle, the DRAM holding what the stores issued before the stop wrote, the
  watchdog, the harness's cycle bound. tests/sim/test_fuzz.py checks it against the
  Verilator model on mutated and random programs (docs/perf.md, "Errors").

DRAM protection as in the hardware (docs/hardware.md, "Protected regions"): LOADs and
the fetch of descriptors and instructions must stay in the read window
(:attr:`IsaSim.read_window`, the WINDOW_BASE / WINDOW_SIZE CSRs), STOREs to DRAM in the
write window (:attr:`IsaSim.write_window`, WR_BASE / WR_SIZE); ``(base, 0)`` is the
whole DRAM. A violation raises DMA_OUT_OF_WINDOW (fetch: BAD_DESCRIPTOR) before
anything is written, with the address FAULT_ADDR would hold in :attr:`IsaSim.fault_addr`.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np

from celosia.rtl import isa
from celosia.errors import IsaError
from celosia.rtl.arrays.engine import gemm_insn_in_range
from celosia.rtl.arrays.window import window_rows
from celosia.rtl.config import AccelConfig
from celosia.rtl.controller.dispatch import TOKEN_MAX
from celosia.rtl.isa import (DESC_BYTES, PARAM_BYTES, Buffer, ErrorCode, NodeDescriptor, Opcode, ParamRecord,
                             VecMode, unpack_bytes)
from celosia.sim.golden.requant import multiply_by_quantized_multiplier, requantize, wrap_int32

__all__ = ["IsaSim", "IsaError", "protection_windows", "work", "MAX_WORK"]

#: What a LOAD with ``buf = 3`` targets: a buffer of depth 0 (every row is out of range).
_NO_BUFFER = np.zeros((0, 0), np.uint8)

_QUEUE = {Opcode.LOAD: 0, Opcode.GEMM: 1, Opcode.VEC: 1, Opcode.NOP: 1, Opcode.STORE: 2}

#: :meth:`IsaSim.run`'s default step limit (units of :func:`work`).
MAX_WORK = 1 << 28


def work(d: dict) -> int:
    """The work of the decoded instruction ``d`` for the step limit: a LOAD's elements
    (``n0 * n1 * n2``), a STORE's bytes, a VEC's ifmap rows times lanes, a GEMM's MACs
    (all taps); 1 at least."""
    op = d["op"]
    if op == Opcode.LOAD:
        n = d["n0"] * d["n1"] * d["n2"]
    elif op == Opcode.STORE:
        n = d["m_len"] * d["n_len"]
    elif op == Opcode.VEC:
        n = d["m_len"] * d["win"] * d["lanes"]
    elif op == Opcode.GEMM:
        n = d["m_len"] * d["k_len"] * d["n_len"] * (d["win_h"] * d["win_w"] if d["window"] else 1)
    else:
        n = 0
    return max(n, 1)


class IsaSim:
    """The ISA-level machine: on-chip buffers, base registers, DRAM and its windows.

    Attributes
    ----------
    base : list[int]
        The base registers.
    read_window, write_window : tuple[int, int]
        ``(base, size)`` in bytes of the read window (LOADs, fetch) and of the write
        window (STOREs); size 0: the whole DRAM. The driver's values come from
        :func:`celosia.sw.driver.driver.build_job`'s CSR writes.
    fault_addr : int
        FAULT_ADDR after the last error (0 when the error has no address).
    """

    def __init__(self, config: AccelConfig, dram: bytearray | None = None):
        self.config = config
        self.dram = dram if dram is not None else bytearray(config.dram_bytes)
        c = config
        self.ifmap = np.zeros((c.ifmap_rows, c.rows), dtype=np.uint8)
        self.weight = np.zeros((c.weight_rows, c.cols), dtype=np.uint8)
        self.param = np.zeros((c.param_depth, PARAM_BYTES), dtype=np.uint8)
        self.psum = np.zeros((c.psum_rows, c.cols), dtype=np.int64)
        self.base = [0] * isa.NUM_BASE_REGS
        self.read_window = (0, 0)
        self.write_window = (0, 0)
        self.fault_addr = 0
        self.macs = 0

    # -- program ------------------------------------------------------------
    def fetch(self, prog_base: int) -> list[int]:
        """The instruction words of the program at ``prog_base``, as they are in DRAM now,
        with fetch's checks (BAD_DESCRIPTOR: ``prog_base`` not 8-aligned, an
        ``insn_offset`` not 32-aligned, a descriptor or instruction outside the read
        window or the DRAM)."""
        insns = []
        i = 0
        while True:
            at = prog_base + DESC_BYTES * i
            self._check_fetch(at, DESC_BYTES, prog_base % DESC_BYTES == 0)
            desc = unpack_bytes(NodeDescriptor, self.dram[at:at + DESC_BYTES])
            off, n = desc["insn_offset"], desc["n_insn"]
            if n == 0:
                return insns
            for j in range(n):
                a = prog_base + off + j * isa.INSN_BYTES
                self._check_fetch(a, isa.INSN_BYTES, off % isa.INSN_BYTES == 0)
                insns.append(int.from_bytes(self.dram[a:a + isa.INSN_BYTES], "little"))
            i += 1

    def run(self, prog_base: int, seed: int | None = None, max_work: int | None = MAX_WORK) -> dict:
        """Run the program at ``prog_base`` in an order of its own (``seed``: random among
        the queue heads that may start, ``None``: round robin) and return the final token
        counts.

        The queues hold ``queue_depth`` instructions each and are filled in fetch order (an
        instruction waits while its queue is full, so later ones wait too); the order-free
        errors of the RTL are raised: ILLEGAL_OPCODE, BAD_DESCRIPTOR, DMA_OUT_OF_WINDOW,
        BUFFER_OUT_OF_RANGE, TOKEN_OVERFLOW (a counter passing 255 in this order),
        TOKEN_DEADLOCK (no queue head may start). ``max_work``: the step limit, in the
        units of :func:`work` (elements, bytes, rows, MACs) summed over the instructions
        run; past it WATCHDOG (``None``: no limit). The RTL's order, its stops and its
        timing: :func:`celosia.sim.perf.run`."""
        decoded = []
        for word in self.fetch(prog_base):
            d = isa.decode(word)
            if d.get("illegal"):
                raise IsaError(ErrorCode.ILLEGAL_OPCODE, f"opcode {d['op']} (instruction #{len(decoded)})")
            decoded.append(d)
        queues = [[], [], []]  # decoded instructions
        fetched = 0
        depth = self.config.queue_depth
        tokens = {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}
        pops = {0: {"pop_next": "c2l"}, 1: {"pop_prev": "l2c", "pop_next": "s2c"},
                2: {"pop_prev": "c2s"}}
        pushes = {0: {"push_next": "l2c"}, 1: {"push_prev": "c2l", "push_next": "c2s"},
                  2: {"push_prev": "s2c"}}
        rng = random.Random(seed)
        heads = [0, 0, 0]
        turn = 0
        done_work = 0
        while True:
            # fetch pushes in program order while the next instruction's queue has room
            while fetched < len(decoded):
                q = _QUEUE[decoded[fetched]["op"]]
                if len(queues[q]) - heads[q] >= depth:
                    break
                queues[q].append(decoded[fetched])
                fetched += 1
            if not any(heads[q] < len(queues[q]) for q in range(3)):
                break
            ready = []
            for q in range(3):
                if heads[q] < len(queues[q]):
                    dep = queues[q][heads[q]]["dep"]
                    if all(tokens[t] > 0 for flag, t in pops[q].items() if dep[flag]):
                        ready.append(q)
            if not ready:
                raise IsaError(ErrorCode.TOKEN_DEADLOCK, f"tokens {tokens}, heads {heads}")
            if seed is None:
                q = next(r for r in sorted(ready, key=lambda r: (r - turn) % 3))
                turn = (q + 1) % 3
            else:
                q = rng.choice(ready)
            d = queues[q][heads[q]]
            heads[q] += 1
            for flag, t in pops[q].items():
                if d["dep"][flag]:
                    tokens[t] -= 1
            done_work += work(d)
            if max_work is not None and done_work > max_work:
                raise IsaError(ErrorCode.WATCHDOG, f"step limit: more than {max_work} elements / "
                                                   f"MACs of work (instruction {d})")
            self.execute(d)
            for flag, t in pushes[q].items():
                if d["dep"][flag]:
                    if tokens[t] == TOKEN_MAX:
                        raise IsaError(ErrorCode.TOKEN_OVERFLOW, f"token counter {t} passes {TOKEN_MAX}")
                    tokens[t] += 1
        return tokens

    # -- instructions ---------------------------------------------------------
    def execute(self, d: dict):
        op = d["op"]
        if op == Opcode.LOAD:
            self._load(d)
        elif op == Opcode.GEMM:
            self._gemm(d)
        elif op == Opcode.STORE:
            self._store(d)
        elif op == Opcode.VEC:
            self._vec(d)

    def _check_fetch(self, addr, nbytes, aligned=True):
        """A descriptor or instruction at ``addr`` inside the read window (and ``aligned``),
        else BAD_DESCRIPTOR with FAULT_ADDR ``addr`` (as the hardware's fetch)."""
        try:
            if not aligned:
                raise IsaError(ErrorCode.BAD_DESCRIPTOR, f"misaligned program address {addr:#x}")
            self._check_window(addr, addr + nbytes - 1, self.read_window, ErrorCode.BAD_DESCRIPTOR)
        except IsaError:
            self.fault_addr = addr & 0xFFFFFFFF
            raise

    def _check_window(self, lo, hi, window, code=ErrorCode.DMA_OUT_OF_WINDOW):
        """Bytes ``lo .. hi`` inside ``window`` (``(base, size)``, size 0: the whole DRAM)
        and the DRAM, else :class:`IsaError` ``code`` with :attr:`fault_addr` set as the
        hardware sets FAULT_ADDR (``lo`` when below the window, else ``hi``; 32 bit)."""
        base, size = window
        start, end = (0, len(self.dram)) if size == 0 else (base, min(base + size, len(self.dram)))
        if lo < start or hi >= end:
            self.fault_addr = (lo if lo < start else hi) & 0xFFFFFFFF
            which = "write" if window is self.write_window else "read"
            raise IsaError(code, f"bytes {lo:#x}..{hi:#x} outside the {which} window "
                                 f"{start:#x}..{end - 1:#x}")

    def check_load(self, d: dict):
        """The LOAD ``d``'s checks (the load DMA's, before its first access), without
        executing it: :class:`IsaError` DMA_OUT_OF_WINDOW or BUFFER_OUT_OF_RANGE."""
        self._load_checked(d)

    def _load_checked(self, d):
        """Check the LOAD ``d``; its target buffer, start address and padded ranges (None
        for an empty one)."""
        # buf = 3 names no buffer: the hardware checks it as a buffer of depth 0
        target = {Buffer.IFMAP: self.ifmap, Buffer.WEIGHT: self.weight,
                  Buffer.PARAM: self.param}.get(d["buf"], _NO_BUFFER)
        n0, n1, n2 = d["n0"], d["n1"], d["n2"]
        if not (n0 and n1 and n2):
            return None
        start = self.base[d["base_reg"]] + d["dram_offset"]
        s0, s1, s2 = d["dram_stride0"], d["dram_stride1"], d["dram_stride2"]
        lo1, hi1, lo2, hi2 = 0, n1, 0, n2
        if d["pad_en"]:
            lo1, hi1 = min(d["pad_lo1"], n1), min(d["pad_hi1"], n1)
            lo2, hi2 = min(d["pad_lo2"], n2), min(d["pad_hi2"], n2)
        if lo1 < hi1 and lo2 < hi2:
            self._check_window(start + lo1 * s1 + lo2 * s2,
                               start + (hi1 - 1) * s1 + (hi2 - 1) * s2 + (n0 - 1) * s0,
                               self.read_window)
        last_row = d["buf_row"] + (n1 - 1) * d["buf_stride1"] + (n2 - 1) * d["buf_stride2"]
        if last_row >= target.shape[0] or d["lane0"] + n0 > target.shape[1]:
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE,
                           f"load to {getattr(d['buf'], 'name', d['buf'])} row {last_row}")
        return target, start, (lo1, hi1, lo2, hi2)

    def _load(self, d):
        checked = self._load_checked(d)
        if checked is None:
            return
        target, start, (lo1, hi1, lo2, hi2) = checked
        n0, n1, n2 = d["n0"], d["n1"], d["n2"]
        s0, s1, s2 = d["dram_stride0"], d["dram_stride1"], d["dram_stride2"]
        pad = d["pad_value"] & 0xFF
        for i2 in range(n2):
            for i1 in range(n1):
                row = d["buf_row"] + i2 * d["buf_stride2"] + i1 * d["buf_stride1"]
                lanes = slice(d["lane0"], d["lane0"] + n0)
                if lo1 <= i1 < hi1 and lo2 <= i2 < hi2:
                    a = start + i2 * s2 + i1 * s1
                    target[row, lanes] = [self.dram[a + i0 * s0] for i0 in range(n0)]
                else:
                    target[row, lanes] = pad

    def _gemm(self, d):
        g = SimpleNamespace(**d)
        if not gemm_insn_in_range(g, self.config):
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE, f"gemm {d}")
        m_len, k_len, n_len = d["m_len"], d["k_len"], d["n_len"]
        if m_len == 0:
            return
        rows = slice(d["psum_row"], d["psum_row"] + m_len)
        old = self.psum[rows, :n_len] if d["accumulate"] else 0
        ifmap, weight = self.ifmap.view(np.int8), self.weight.view(np.int8)
        taps = [(fh, fw) for fh in range(d["win_h"]) for fw in range(d["win_w"])] if d["window"] else [(0, 0)]
        acc = np.zeros((m_len, n_len), dtype=np.int64)
        for i, (fh, fw) in enumerate(taps):
            w0 = d["weight_row"] + i * k_len
            acc += ((ifmap[window_rows(g, fh, fw), :k_len].astype(np.int64) - d["in_zp"])
                    @ weight[w0:w0 + k_len, :n_len].astype(np.int64))
        k_len *= len(taps)
        self.psum[rows, :n_len] = wrap_int32(old + acc)
        self.macs += m_len * k_len * n_len

    def _vec(self, d):
        c = self.config
        m_len, win, lanes = d["m_len"], d["win"], d["lanes"]
        # the vector engine's check (rtl/vector.py), whatever m_len: mode 3 names no mode,
        # ADD reads the first two rows of each window
        if (lanes > min(c.rows, c.cols) or d["ifmap_row"] + m_len * win > c.ifmap_rows
                or d["psum_row"] + m_len > c.psum_rows or d["mode"] not in tuple(VecMode)
                or (d["mode"] == VecMode.ADD and win < 2)):
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE, f"vec {d}")
        if m_len == 0 or win == 0:
            return
        rows = self.ifmap[d["ifmap_row"]:d["ifmap_row"] + m_len * win, :lanes]
        x = rows.view(np.int8).astype(np.int64).reshape(m_len, win, lanes)
        mode = d["mode"]
        if mode == VecMode.MAX:
            out = x.max(axis=1) - d["in_zp"]
        elif mode == VecMode.SUM:
            out = (x - d["in_zp"]).sum(axis=1)
        else:
            ls = d["left_shift"]
            a = multiply_by_quantized_multiplier(wrap_int32((x[:, 0] - d["in_zp"]) << ls), d["a_m0"], d["a_shift"])
            b = multiply_by_quantized_multiplier(wrap_int32((x[:, 1] - d["b_zp"]) << ls), d["b_m0"], d["b_shift"])
            out = a + b
        self.psum[d["psum_row"]:d["psum_row"] + m_len, :lanes] = wrap_int32(out)

    def _store(self, d):
        c = self.config
        m_len, n_len = d["m_len"], d["n_len"]
        if not (m_len and n_len):
            return
        start = self.base[d["base_reg"]] + d["dram_offset"]
        to_buf = d["to_buf"]
        if not to_buf:
            self._check_window(start, start + (m_len - 1) * d["dram_stride"] + n_len - 1,
                               self.write_window)
        if (d["psum_row"] + m_len > c.psum_rows or d["param_row"] + n_len > c.param_depth
                or n_len > c.cols or (to_buf and (d["buf_row"] + (m_len - 1) * d["buf_stride"] >= c.ifmap_rows
                                                  or d["lane0"] + n_len > c.rows))):
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE, f"store {d}")
        recs = [unpack_bytes(ParamRecord, row) for row in self.param[d["param_row"]:d["param_row"] + n_len]]
        bias, m0, shift = (np.array([r[k] for r in recs], dtype=t)
                           for k, t in (("bias", np.int32), ("m0", np.int32), ("shift", np.int8)))
        for m in range(m_len):
            acc = self.psum[d["psum_row"] + m, :n_len]
            out = requantize(acc, bias, m0, shift, d["out_zp"], d["act_min"], d["act_max"],
                             single_round=d["single_round"])
            if to_buf:
                self.ifmap[d["buf_row"] + m * d["buf_stride"], d["lane0"]:d["lane0"] + n_len] = out.view(np.uint8)
            else:
                a = start + m * d["dram_stride"]
                self.dram[a:a + n_len] = out.view(np.uint8).tobytes()


def protection_windows(lay: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """The driver's ``(read_window, write_window)``, each ``(base, size)``, for the memory
    map ``lay`` of :meth:`~celosia.sw.compiler.Program.layout`: reads over the whole image
    (``0 .. end``: program, weights, inputs, scratch, outputs), writes
    over scratch and outputs (``scratch .. end``), so a program can never store over
    itself, its weights or its inputs."""
    return (0, lay["end"]), (lay["scratch"], lay["end"] - lay["scratch"])


def run_program(program, x_q: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, dict]:
    """Run a compiled :class:`~celosia.sw.compiler.Program` on int8 ``x_q [batch, in_features]``.

    Lays out DRAM as the driver does (one run), runs the initialization graph if the
    program has one (:attr:`~celosia.sw.compiler.Program.init_offset`), then the
    execution graph under schedule ``seed``, and returns ``(output [batch,
    out_features], the execution run's final token counts)``.
    """
    from celosia.rtl.isa import BaseReg
    lay = program.layout(1)
    dram = bytearray(lay["end"])
    dram[lay["program"]:lay["program"] + len(program.image())] = program.image()
    dram[lay["static"]:lay["static"] + len(program.static)] = program.static
    blob = np.ascontiguousarray(x_q, dtype=np.int8).tobytes()
    dram[lay["input"]:lay["input"] + len(blob)] = blob
    sim = IsaSim(program.config, dram)
    sim.read_window, sim.write_window = protection_windows(lay)
    for reg, key in ((BaseReg.PROGRAM, "program"), (BaseReg.STATIC, "static"),
                     (BaseReg.SCRATCH, "scratch"), (BaseReg.INPUT, "input"),
                     (BaseReg.OUTPUT, "output")):
        sim.base[reg] = lay[key]
    if program.init_offset is not None:
        sim.run(lay["program"] + program.init_offset, seed=seed)
    tokens = sim.run(lay["program"], seed=seed)
    out = np.frombuffer(bytes(dram[lay["output"]:lay["output"] + program.output_bytes]), np.int8)
    return out.reshape(program.batch, program.out_features), tokens
