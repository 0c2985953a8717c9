"""Instruction-level functional simulator of the ISA (no timing).

Executes a program image exactly as ``rtl/isa.py`` defines each instruction,
with the three queues and the dependency tokens, choosing among the queue heads
that may start in an order given by ``seed`` (round robin when ``None``). A
program whose tokens are missing produces wrong results under some orders, so
compiler tests run several seeds. Used to test the compiler without RTL; it
checks the same bounds the hardware checks and raises :class:`IsaError`
with the hardware's error code.
"""

from __future__ import annotations

import random

import numpy as np

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, PARAM_BYTES
from celosia.rtl.isa import Buffer, ErrorCode, Opcode
from celosia.sim.golden.requant import requantize, wrap_int32

__all__ = ["IsaSim", "IsaError"]

_QUEUE = {Opcode.LOAD: 0, Opcode.GEMM: 1, Opcode.NOP: 1, Opcode.STORE: 2}


class IsaError(RuntimeError):
    def __init__(self, code: ErrorCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


class IsaSim:
    def __init__(self, config: AccelConfig, dram: bytearray | None = None):
        self.config = config
        self.dram = dram if dram is not None else bytearray(config.dram_bytes)
        c = config
        self.ifmap = np.zeros((c.ifmap_rows, c.rows), dtype=np.uint8)
        self.weight = np.zeros((c.weight_rows, c.cols), dtype=np.uint8)
        self.param = np.zeros((c.param_rows, c.param_lanes), dtype=np.uint8)
        self.psum = np.zeros((c.psum_rows, c.cols), dtype=np.int64)
        self.base = [0] * isa.NUM_BASE_REGS
        self.macs = 0

    # -- program ------------------------------------------------------------
    def fetch(self, prog_base: int) -> list[int]:
        insns = []
        i = 0
        while True:
            desc = int.from_bytes(self.dram[prog_base + 8 * i: prog_base + 8 * i + 8], "little")
            off, n = desc & 0xFFFFFFFF, (desc >> 32) & 0xFFFF
            if n == 0:
                return insns
            for j in range(n):
                a = prog_base + off + j * isa.INSN_BYTES
                insns.append(int.from_bytes(self.dram[a:a + isa.INSN_BYTES], "little"))
            i += 1

    def run(self, prog_base: int, seed: int | None = None) -> dict:
        queues = [[], [], []]
        for word in self.fetch(prog_base):
            op = word & 0xF
            if op not in {o.value for o in Opcode}:
                raise IsaError(ErrorCode.ILLEGAL_OPCODE, f"opcode {op}")
            queues[_QUEUE[Opcode(op)]].append(word)
        tokens = {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}
        pops = {0: {"pop_next": "c2l"}, 1: {"pop_prev": "l2c", "pop_next": "s2c"},
                2: {"pop_prev": "c2s"}}
        pushes = {0: {"push_next": "l2c"}, 1: {"push_prev": "c2l", "push_next": "c2s"},
                  2: {"push_prev": "s2c"}}
        rng = random.Random(seed)
        heads = [0, 0, 0]
        turn = 0
        while any(heads[q] < len(queues[q]) for q in range(3)):
            ready = []
            for q in range(3):
                if heads[q] < len(queues[q]):
                    dep = isa.decode(queues[q][heads[q]])["dep"]
                    if all(tokens[t] > 0 for flag, t in pops[q].items() if dep[flag]):
                        ready.append(q)
            if not ready:
                raise IsaError(ErrorCode.TOKEN_DEADLOCK, f"tokens {tokens}, heads {heads}")
            if seed is None:
                q = next(r for r in sorted(ready, key=lambda r: (r - turn) % 3))
                turn = (q + 1) % 3
            else:
                q = rng.choice(ready)
            word = queues[q][heads[q]]
            heads[q] += 1
            d = isa.decode(word)
            for flag, t in pops[q].items():
                if d["dep"][flag]:
                    tokens[t] -= 1
            self.execute(d)
            for flag, t in pushes[q].items():
                if d["dep"][flag]:
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

    def _check_window(self, lo, hi):
        if lo < 0 or hi >= len(self.dram):
            raise IsaError(ErrorCode.DMA_OUT_OF_WINDOW, f"bytes {lo:#x}..{hi:#x}")

    def _load(self, d):
        target = {Buffer.IFMAP: self.ifmap, Buffer.WEIGHT: self.weight, Buffer.PARAM: self.param}[d["buf"]]
        n0, n1, n2 = d["n0"], d["n1"], d["n2"]
        if not (n0 and n1 and n2):
            return
        start = self.base[d["base_reg"]] + d["dram_offset"]
        hi = start + (n0 - 1) * d["dram_stride0"] + (n1 - 1) * d["dram_stride1"] + (n2 - 1) * d["dram_stride2"]
        self._check_window(start, hi)
        last_row = d["buf_row"] + (n1 - 1) * d["buf_stride1"] + (n2 - 1) * d["buf_stride2"]
        if last_row >= target.shape[0] or d["lane0"] + n0 > target.shape[1]:
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE, f"load to {d['buf'].name} row {last_row}")
        for i2 in range(n2):
            for i1 in range(n1):
                a = start + i2 * d["dram_stride2"] + i1 * d["dram_stride1"]
                row = d["buf_row"] + i2 * d["buf_stride2"] + i1 * d["buf_stride1"]
                for i0 in range(n0):
                    target[row, d["lane0"] + i0] = self.dram[a + i0 * d["dram_stride0"]]

    def _gemm(self, d):
        c = self.config
        m_len, k_len, n_len = d["m_len"], d["k_len"], d["n_len"]
        if m_len == 0:
            return
        if (d["ifmap_row"] + m_len > c.ifmap_rows or d["weight_row"] + k_len > c.weight_rows
                or d["psum_row"] + m_len > c.psum_rows or k_len > c.rows or n_len > c.cols):
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE, f"gemm {d}")
        x = self.ifmap[d["ifmap_row"]:d["ifmap_row"] + m_len, :k_len].view(np.int8).astype(np.int64)
        w = self.weight[d["weight_row"]:d["weight_row"] + k_len, :n_len].view(np.int8).astype(np.int64)
        rows = slice(d["psum_row"], d["psum_row"] + m_len)
        old = self.psum[rows, :n_len] if d["accumulate"] else 0
        self.psum[rows, :n_len] = wrap_int32(old + x @ w)
        self.macs += m_len * k_len * n_len

    def _store(self, d):
        c = self.config
        m_len, n_len = d["m_len"], d["n_len"]
        if not (m_len and n_len):
            return
        start = self.base[d["base_reg"]] + d["dram_offset"]
        self._check_window(start, start + (m_len - 1) * d["dram_stride"] + n_len - 1)
        if d["psum_row"] + m_len > c.psum_rows or d["param_row"] >= c.param_rows or n_len > c.cols:
            raise IsaError(ErrorCode.BUFFER_OUT_OF_RANGE, f"store {d}")
        rec = self.param[d["param_row"], :c.cols * PARAM_BYTES].reshape(c.cols, PARAM_BYTES)
        bias = rec[:, 0:4].copy().view("<i4").ravel()[:n_len]
        m0 = rec[:, 4:8].copy().view("<i4").ravel()[:n_len]
        shift = rec[:, 8].view(np.int8)[:n_len]
        for m in range(m_len):
            acc = self.psum[d["psum_row"] + m, :n_len]
            out = requantize(acc, bias, m0, shift, d["out_zp"], d["act_min"], d["act_max"])
            a = start + m * d["dram_stride"]
            self.dram[a:a + n_len] = out.view(np.uint8).tobytes()
