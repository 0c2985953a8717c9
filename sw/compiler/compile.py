"""Compile a :class:`~celosia.sw.quant.QModel` into a :class:`Program` for one config.

Passes, each a named function in its own module:

0. :func:`~celosia.sw.compiler.groups.merge_model_groups` — grouped convolutions with
   few channels per group (depthwise) as fewer, block-diagonal groups that fill a
   weight tile.
1. :func:`~celosia.sw.compiler.alloc.allocate` — static data (GEMM weights, PPU
   parameters) and DRAM slots for every feature map (liveness: a slot is reused once
   its last reader ran).
2. Lowering — each layer becomes a list of :class:`~celosia.sw.compiler.tiling.Unit`\\ s
   of output tiles (:mod:`~celosia.sw.compiler.tiling`). fc and conv layers go to the
   lowering family of the dataflow, the module its registry entry names
   (:attr:`celosia.rtl.dataflows.Dataflow.lowering`): plain GEMMs
   (:mod:`~celosia.sw.compiler.lower_gemm`: ws, os, feie) or windowed GEMMs
   (:mod:`~celosia.sw.compiler.lower_rs`: rs); vector ops (pooling, add) to
   :mod:`~celosia.sw.compiler.lower_vec`, shared by every dataflow.
3. :func:`~celosia.sw.compiler.alloc.plan_weights` — which layers' weight tiles stay
   resident in the weight buffer (loaded once by the initialization graph,
   :attr:`Program.init`) and which stream.
4. :func:`~celosia.sw.compiler.keep.plan_keep` — which layers' outputs stay in the ifmap
   buffer as the next layer's input (STOREs to the buffer, no LOADs of it).
5. :func:`~celosia.sw.compiler.emit.emit_unit` — instructions with dependency tokens
   (double buffering); the resident weight tiles need no LOAD.

Data layouts in DRAM: activations int8 NHWC (a fully connected layer's
``[features]`` is a 1x1xC map); weights and PPU parameters as
:mod:`~celosia.sw.compiler.alloc` lays them out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc

from celosia.errors import CompileError, EncodeError
from celosia.rtl.config import AccelConfig, ceil_div
from celosia.rtl.dataflows import dataflow
from celosia.rtl import isa
from celosia.rtl.isa import Buffer
from celosia.sw.compiler import lower_vec
from celosia.sw.compiler.alloc import allocate, plan_weights, streaming_plan
from celosia.sw.compiler.emit import emit_unit, weight_fetch
from celosia.sw.compiler.groups import merge_model_groups
from celosia.sw.compiler.keep import plan_keep
from celosia.sw.compiler.program import MAX_DESC_INSNS, NodeCode, Program
from celosia.sw.compiler.tiling import dep_flags
from celosia.sw.quant.model import QModel

__all__ = ["compile_model", "gc_paused", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("fc", "conv", "maxpool", "avgpool", "gap", "add")


def compile_model(model: QModel, config: AccelConfig, batch: int = 1,
                  resident_weights: bool = True, keep_outputs: bool = True) -> Program:
    """Compile ``model`` for ``config``, ``batch`` samples per run.

    The cyclic garbage collector is paused while it runs (:func:`gc_paused`).

    With ``resident_weights`` (the default) the weight tiles of the layers that fit the
    weight buffer are loaded once by an initialization graph and the execution graph
    reads them with no LOAD (:func:`~celosia.sw.compiler.alloc.plan_weights`); without,
    every GEMM loads its weight tile every run. With ``keep_outputs`` (the default) a
    layer's output that fits stays in the ifmap buffer as the next layer's input
    (:func:`~celosia.sw.compiler.keep.plan_keep`); without, every layer's output goes
    through DRAM."""
    with gc_paused():
        return _compile(model, config, batch, resident_weights, keep_outputs)


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector for the ``with`` block (and restore it as it
    was). The compiler builds up to millions of small objects (tiles, LOADs, instruction
    words) that form no reference cycles, and each of the collector's full passes walks all
    of them: about half of the compile time of a ResNet went into those passes. Whatever
    the block leaves behind is collected as usual afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _compile(model: QModel, config: AccelConfig, batch: int, resident_weights: bool,
             keep_outputs: bool) -> Program:
    """:func:`compile_model`, with the collector as the caller left it."""
    if batch < 1:
        raise CompileError(f"batch must be at least 1, not {batch}")
    if batch > 0xFFFF:
        raise CompileError(f"batch must be at most 65535, not {batch}")
    for layer in model.layers:
        if layer.op not in SUPPORTED_OPS:
            raise CompileError(f"layer {layer.name!r}: op {layer.op!r} has no hardware mapping yet; "
                               f"supported: {', '.join(SUPPORTED_OPS)}")
    family = dataflow(config.dataflow).lowering
    macs = [layer.macs for layer in model.layers]   # the model's own, before merge_groups
    model = merge_model_groups(model, config)
    static, allocs, scratch = allocate(model, config, batch)
    lowered = []
    for layer, alloc in zip(model.layers, allocs):
        lowering = family if layer.op in family.LOWERINGS else lower_vec
        lowered.append((lowering, lowering.LOWERINGS[layer.op](layer, config, batch, alloc)))
    keep = plan_keep(model, [units for _, units in lowered], allocs, config, batch, enabled=keep_outputs)
    by_name = {layer.name: units for layer, (_, units) in zip(model.layers, lowered)}
    plan = plan_weights(by_name, config, enabled=resident_weights)
    memo: dict = {}   # each unit's weight groups under a plan, computed once (emit.weight_fetch)
    if plan.layers:   # what the resident tiles save per run: exactly, with emit's weight groups
        diff = {name: [a - b for a, b in zip(weight_fetch(units, streaming_plan(config), memo),
                                             weight_fetch(units, plan, memo))]
                for name, units in by_name.items()}
        plan = dataclasses.replace(plan, saved_bytes=sum(d[0] for d in diff.values()),
                                   saved_insns={name: d[1] for name, d in diff.items() if d[1]})
        if plan.saved_bytes <= 0:   # the smaller streaming halves cost more than it saves
            plan = streaming_plan(config)
    nodes = []
    n_layers = len(model.layers)
    for i, (layer, (lowering, units)) in enumerate(zip(model.layers, lowered)):
        insns = []
        try:
            for j, unit in enumerate(units):
                insns.extend(emit_unit(unit, config, first=(i == 0 and j == 0),
                                       last=(i == n_layers - 1 and j == len(units) - 1), weights=plan,
                                       memo=memo))
        except EncodeError as e:  # an instruction field out of range
            raise CompileError(f"layer {layer.name!r} ({layer.op}) cannot be encoded for "
                               f"{config.array} {config.dataflow}: {e}") from e

        ops = sum(len(t.ops) for u in units for t in u.tiles)
        nodes.append(NodeCode(name=layer.name, op=layer.op, insns=insns, macs=macs[i] * batch,
                              tiles={"units": len(units), "out_tiles": sum(len(u.tiles) for u in units),
                                     "gemms": ops, "ifmap_resident": units[0].resident,
                                     "weights_resident": layer.name in plan.layers,
                                     "output_kept": layer.name in keep.layers,
                                     "batch": batch, **lowering.mapping(layer, units, config)}))
    kept = {}
    if keep.layers:
        fewer_descs = sum(_descs(len(nd.insns) + keep.saved_insns.get(nd.name, 0)) - _descs(len(nd.insns))
                          for nd in nodes)
        kept = {"layers": list(keep.layers), "saved_bytes": keep.saved_bytes + fewer_descs * isa.DESC_BYTES,
                "saved_insns": dict(keep.saved_insns)}
    init, resident = None, {}
    if plan.layers:
        init_insns = [ld.encode(Buffer.WEIGHT, row, dep_flags()) for ld, row in plan.init_loads(by_name)]
        init = NodeCode(name="init", op="init", insns=init_insns, macs=0,
                        tiles={"weight_tiles": len(plan.rows), "weight_rows": plan.used_rows})
        # Fewer instructions can also mean fewer descriptors (a node of > 65535 of them).
        fewer_descs = sum(_descs(len(nd.insns) + plan.saved_insns.get(nd.name, 0)) - _descs(len(nd.insns))
                          for nd in nodes)
        resident = {"layers": list(plan.layers), "rows": plan.used_rows,
                    "stream_halves": list(plan.halves),
                    "saved_bytes": plan.saved_bytes + fewer_descs * isa.DESC_BYTES,
                    "saved_insns": dict(plan.saved_insns)}
    return Program(config=config, batch=batch, nodes=nodes, static=static,
                   input_bytes=batch * model.in_features, output_bytes=batch * model.out_features,
                   scratch_bytes=scratch, in_features=model.in_features,
                   out_features=model.out_features, init=init, resident=resident, kept=kept)


def _descs(n_insns: int) -> int:
    """Descriptors a node of ``n_insns`` instructions takes (:meth:`Program.descriptor_counts`)."""
    return ceil_div(n_insns, MAX_DESC_INSNS)
