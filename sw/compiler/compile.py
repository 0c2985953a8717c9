"""Compile a :class:`~celosia.sw.quant.QModel` into a :class:`Program` for one config.

Passes, each a named function in its own module:

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
3. :func:`~celosia.sw.compiler.emit.emit_unit` — instructions with dependency tokens
   (double buffering).

Data layouts in DRAM: activations int8 NHWC (a fully connected layer's
``[features]`` is a 1x1xC map); weights and PPU parameters as
:mod:`~celosia.sw.compiler.alloc` lays them out.
"""

from __future__ import annotations

from celosia.errors import CompileError, EncodeError
from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import dataflow
from celosia.sw.compiler import lower_vec
from celosia.sw.compiler.alloc import allocate
from celosia.sw.compiler.emit import emit_unit
from celosia.sw.compiler.program import NodeCode, Program
from celosia.sw.quant.model import QModel

__all__ = ["compile_model", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("fc", "conv", "maxpool", "avgpool", "gap", "add")


def compile_model(model: QModel, config: AccelConfig, batch: int = 1) -> Program:
    """Compile ``model`` for ``config``, ``batch`` samples per run."""
    if batch < 1:
        raise CompileError(f"batch must be at least 1, not {batch}")
    if batch > 0xFFFF:
        raise CompileError(f"batch must be at most 65535, not {batch}")
    for layer in model.layers:
        if layer.op not in SUPPORTED_OPS:
            raise CompileError(f"layer {layer.name!r}: op {layer.op!r} has no hardware mapping yet; "
                               f"supported: {', '.join(SUPPORTED_OPS)}")
    family = dataflow(config.dataflow).lowering
    static, allocs, scratch = allocate(model, config, batch)
    nodes = []
    n_layers = len(model.layers)
    for i, (layer, alloc) in enumerate(zip(model.layers, allocs)):
        lowering = family if layer.op in family.LOWERINGS else lower_vec
        units = lowering.LOWERINGS[layer.op](layer, config, batch, alloc)
        insns = []
        try:
            for j, unit in enumerate(units):
                insns.extend(emit_unit(unit, config, first=(i == 0 and j == 0),
                                       last=(i == n_layers - 1 and j == len(units) - 1)))
        except EncodeError as e:  # an instruction field out of range
            raise CompileError(f"layer {layer.name!r} ({layer.op}) cannot be encoded for "
                               f"{config.array} {config.dataflow}: {e}") from e

        ops = sum(len(t.ops) for u in units for t in u.tiles)
        nodes.append(NodeCode(name=layer.name, op=layer.op, insns=insns, macs=layer.macs * batch,
                              tiles={"units": len(units), "out_tiles": sum(len(u.tiles) for u in units),
                                     "gemms": ops, "ifmap_resident": units[0].resident,
                                     "batch": batch, **lowering.mapping(layer, units, config)}))
    return Program(config=config, batch=batch, nodes=nodes, static=static,
                   input_bytes=batch * model.in_features, output_bytes=batch * model.out_features,
                   scratch_bytes=scratch, in_features=model.in_features,
                   out_features=model.out_features)
