"""Compile a :class:`~celosia.sw.quant.QModel` into a :class:`Program` for one config.

Passes, each a named function:

1. :func:`plan_fc` — tile a fully connected layer for the array and buffers.
2. :func:`allocate` — static data (weights, PPU parameters) and scratch
   feature maps (two ping-pong slots: liveness of a chain is one layer).
3. :func:`emit_fc` — instructions with dependency tokens (double buffering).

Data layouts in DRAM: activations int8 row-major ``[batch, features]`` (NHWC
flattened); weights int8 ``[K, N]`` row-major; PPU parameters 9 bytes per
output channel (bias int32 LE with the input zero point folded in, M0 int32 LE,
shift int8), padded to whole column tiles.

Tiling (weight stationary): ``K`` in tiles of ``rows``, ``N`` in tiles of
``cols``. The layer input stays resident in one half of the ifmap buffer; the
PPU parameters of the layer in one half of the parameter buffer; weight tiles
alternate between the two halves of the weight buffer and psum tiles between
the two halves of the psum buffer, so DMA, array and store overlap. Token
protocol (VTA-style, counts must balance, every pop refers to an earlier push in
program order so an in-order fetch can never deadlock):

* load group ``t`` (weight tile ``t``; group 0 also loads the input and the
  parameters) pushes ``l2c``; GEMM ``t`` pops it;
* GEMM ``t`` pushes ``c2l`` when load group ``t+2`` exists (it will overwrite
  the weight half GEMM ``t`` read); that group pops it;
* the last GEMM of output tile ``j`` pushes ``c2s``; STORE ``j`` pops it;
* STORE ``j`` pushes ``s2c`` when output tile ``j+2`` exists (same psum half);
  the first GEMM of tile ``j+2`` pops it;
* between layers, a NOP on the compute queue pops ``s2c`` from the layer's last
  STORE (the output is in DRAM) and pushes ``c2l``, which the next layer's first
  LOAD pops: a barrier, because the next layer reads what the stores wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, PARAM_BYTES
from celosia.rtl.isa import BaseReg, Buffer, Opcode
from celosia.sw.compiler.program import NodeCode, Program, align
from celosia.sw.errors import CelosiaError
from celosia.sw.quant.model import QLayer, QModel

__all__ = ["compile_model", "CompileError", "FcPlan", "plan_fc"]


class CompileError(CelosiaError):
    """The model cannot be mapped onto the configured accelerator."""


@dataclass(frozen=True)
class FcPlan:
    K: int
    N: int
    M: int        # batch rows per run
    kt: int       # K tiles
    nt: int       # N tiles
    rows: int
    cols: int

    def k_len(self, k: int) -> int:
        return min(self.rows, self.K - k * self.rows)

    def n_len(self, n: int) -> int:
        return min(self.cols, self.N - n * self.cols)


def plan_fc(layer: QLayer, config: AccelConfig, batch: int) -> FcPlan:
    K, N = layer.in_features, layer.out_features
    plan = FcPlan(K=K, N=N, M=batch, kt=math.ceil(K / config.rows), nt=math.ceil(N / config.cols),
                  rows=config.rows, cols=config.cols)
    need = {
        "ifmap_rows": (plan.M * plan.kt, "the layer input (batch x K tiles)"),
        "psum_rows": (plan.M, "one output tile (batch rows)"),
        "param_rows": (plan.nt, "the PPU parameters of the layer (N tiles)"),
    }
    for name, (rows_needed, what) in need.items():
        half = getattr(config, name) // 2
        if rows_needed > half:
            raise CompileError(
                f"layer {layer.name!r} (K={K}, N={N}, batch={batch}) needs {rows_needed} rows "
                f"of the {name.split('_')[0]} buffer half for {what}, but {name}={getattr(config, name)} "
                f"gives {half} per half; increase {name} or reduce the batch")
    if batch > 0xFFFF:
        raise CompileError(f"batch must be at most 65535, not {batch}")
    return plan


def _dep(pop_prev=False, pop_next=False, push_prev=False, push_next=False) -> dict:
    return {"pop_prev": int(pop_prev), "pop_next": int(pop_next),
            "push_prev": int(push_prev), "push_next": int(push_next)}


def _params_blob(layer: QLayer, plan: FcPlan) -> bytes:
    """Per output channel: bias (folded) int32 LE, M0 int32 LE, shift int8; padded to nt*cols."""
    n_pad = plan.nt * plan.cols
    rec = np.zeros((n_pad, PARAM_BYTES), dtype=np.uint8)
    bias = np.zeros(n_pad, dtype="<i4")
    m0 = np.zeros(n_pad, dtype="<i4")
    shift = np.zeros(n_pad, dtype=np.int8)
    bias[:plan.N] = layer.folded_bias()
    m0[:plan.N] = layer.m0
    shift[:plan.N] = layer.shift
    rec[:, 0:4] = bias.view(np.uint8).reshape(-1, 4)
    rec[:, 4:8] = m0.view(np.uint8).reshape(-1, 4)
    rec[:, 8] = shift.view(np.uint8)
    return rec.tobytes()


@dataclass
class _Alloc:
    weights: int   # offset in static
    params: int    # offset in static
    src: tuple     # (base_reg, offset) of the layer input
    dst: tuple     # (base_reg, offset) of the layer output


def allocate(model: QModel, plans: list[FcPlan], batch: int) -> tuple[bytes, list[_Alloc], int]:
    """Static data and the feature-map slots of every layer; returns (static, allocs, scratch_bytes)."""
    static = bytearray()
    allocs = []
    slot_bytes = align(max([batch * p.N for p in plans[:-1]] or [0]), 8)
    for i, (layer, plan) in enumerate(zip(model.layers, plans)):
        w_off = len(static)
        static += np.ascontiguousarray(layer.w, dtype=np.int8).tobytes()
        static += bytes(align(len(static), 8) - len(static))
        p_off = len(static)
        static += _params_blob(layer, plan)
        static += bytes(align(len(static), 8) - len(static))
        src = (BaseReg.INPUT, 0) if i == 0 else (BaseReg.SCRATCH, ((i - 1) % 2) * slot_bytes)
        last = i == len(model.layers) - 1
        dst = (BaseReg.OUTPUT, 0) if last else (BaseReg.SCRATCH, (i % 2) * slot_bytes)
        allocs.append(_Alloc(weights=w_off, params=p_off, src=src, dst=dst))
    scratch = 2 * slot_bytes if len(model.layers) > 1 else 0
    return bytes(static), allocs, scratch


def emit_fc(layer: QLayer, plan: FcPlan, alloc: _Alloc, config: AccelConfig,
            first: bool, last: bool) -> list[int]:
    """Instructions of one fully connected layer (see the module docstring for the tokens)."""
    R, C, M = config.rows, config.cols, plan.M
    w_half, i_half = config.weight_rows // 2, config.ifmap_rows // 2
    p_half, pr_half = config.psum_rows // 2, config.param_rows // 2
    ifmap_base = 0  # the input is resident in half 0 (a barrier separates layers)
    param_base = 0
    tiles = [(n, k) for n in range(plan.nt) for k in range(plan.kt)]
    T = len(tiles)
    insns: list[int] = []

    def load_group(t):
        group = []
        n, k = tiles[t]
        if t == 0:
            # PPU parameters of the whole layer (pops the previous layer's barrier token).
            group.append(dict(
                buf=Buffer.PARAM, base_reg=BaseReg.STATIC, dram_offset=alloc.params,
                n0=C * PARAM_BYTES, dram_stride0=1, lane0=0,
                n1=plan.nt, dram_stride1=C * PARAM_BYTES, buf_stride1=1,
                n2=1, dram_stride2=0, buf_stride2=0, buf_row=param_base,
                dep=_dep(pop_next=not first)))
            # The layer input, [M, K] row-major -> row kt*M + m, lane k % R.
            src_reg, src_off = alloc.src
            full = plan.K // R
            if full:
                group.append(dict(
                    buf=Buffer.IFMAP, base_reg=src_reg, dram_offset=src_off,
                    n0=R, dram_stride0=1, lane0=0,
                    n1=M, dram_stride1=plan.K, buf_stride1=1,
                    n2=full, dram_stride2=R, buf_stride2=M, buf_row=ifmap_base,
                    dep=_dep()))
            rem = plan.K - full * R
            if rem:
                group.append(dict(
                    buf=Buffer.IFMAP, base_reg=src_reg, dram_offset=src_off + full * R,
                    n0=rem, dram_stride0=1, lane0=0,
                    n1=M, dram_stride1=plan.K, buf_stride1=1,
                    n2=1, dram_stride2=0, buf_stride2=0, buf_row=ifmap_base + full * M,
                    dep=_dep()))
        # Weight tile t: rows k*R.., columns n*C.. of W [K, N].
        group.append(dict(
            buf=Buffer.WEIGHT, base_reg=BaseReg.STATIC,
            dram_offset=alloc.weights + k * R * plan.N + n * C,
            n0=plan.n_len(n), dram_stride0=1, lane0=0,
            n1=plan.k_len(k), dram_stride1=plan.N, buf_stride1=1,
            n2=1, dram_stride2=0, buf_stride2=0, buf_row=(t % 2) * w_half,
            dep=_dep(pop_next=t >= 2)))
        group[-1]["dep"]["push_next"] = 1
        return [isa.encode(Opcode.LOAD, **fields) for fields in group]

    def gemm(t):
        n, k = tiles[t]
        last_k = k == plan.kt - 1
        return isa.encode(
            Opcode.GEMM, accumulate=int(k > 0),
            ifmap_row=ifmap_base + k * M, weight_row=(t % 2) * w_half,
            psum_row=(n % 2) * p_half, m_len=M, k_len=plan.k_len(k), n_len=plan.n_len(n),
            dep=_dep(pop_prev=True, pop_next=(k == 0 and n >= 2),
                     push_prev=t + 2 < T, push_next=last_k))

    def store(n):
        dst_reg, dst_off = alloc.dst
        return isa.encode(
            Opcode.STORE, base_reg=dst_reg, dram_offset=dst_off + n * C, dram_stride=plan.N,
            psum_row=(n % 2) * p_half, param_row=param_base + n, m_len=M, n_len=plan.n_len(n),
            out_zp=int(layer.out_zp), act_min=int(layer.act_min), act_max=int(layer.act_max),
            dep=_dep(pop_prev=True, push_prev=(n + 2 < plan.nt) or (n == plan.nt - 1 and not last)))

    assert ifmap_base + plan.kt * M <= i_half and param_base + plan.nt <= pr_half
    insns.extend(load_group(0))
    for t in range(T):
        if t + 1 < T:
            insns.extend(load_group(t + 1))
        insns.append(gemm(t))
        n, k = tiles[t]
        if k == plan.kt - 1:
            insns.append(store(n))
    if not last:
        insns.append(isa.encode(Opcode.NOP, dep=_dep(pop_next=True, push_prev=True)))
    return insns


def compile_model(model: QModel, config: AccelConfig, batch: int = 1) -> Program:
    """Compile ``model`` for ``config``, ``batch`` samples per run."""
    if batch < 1:
        raise CompileError(f"batch must be at least 1, not {batch}")
    for layer in model.layers:
        if layer.op != "fc":
            raise CompileError(f"layer {layer.name!r}: op {layer.op!r} has no hardware mapping yet; "
                               f"supported: fc")
    plans = [plan_fc(layer, config, batch) for layer in model.layers]
    static, allocs, scratch = allocate(model, plans, batch)
    nodes = []
    for i, (layer, plan, alloc) in enumerate(zip(model.layers, plans, allocs)):
        insns = emit_fc(layer, plan, alloc, config, first=i == 0, last=i == len(model.layers) - 1)
        nodes.append(NodeCode(name=layer.name, op=layer.op, insns=insns, macs=layer.macs * batch,
                              tiles={"k_tiles": plan.kt, "n_tiles": plan.nt, "batch": batch}))
    return Program(config=config, batch=batch, nodes=nodes, static=static,
                   input_bytes=batch * model.in_features, output_bytes=batch * model.out_features,
                   scratch_bytes=scratch, in_features=model.in_features,
                   out_features=model.out_features)
