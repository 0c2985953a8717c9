"""Graph-level golden executor: a whole quantized model, layer by layer, in int8.

:func:`golden_forward` chains the per-operator golden functions of this package
over the layers of a quantized model. It is the reference the driver's
``golden`` back end returns and the one every hardware back end is checked
against bit for bit.

``celosia.sim.golden`` imports nothing else of ours (only :mod:`celosia.errors`),
so the model is duck-typed; :class:`celosia.sw.quant.QModel` /
:class:`~celosia.sw.quant.QLayer` provide these attributes:

``model``
    ``INPUT`` (the name of the model input's tensor), ``layers`` (a sequence of
    layers in execution order) and ``layer_inputs(i)`` (the tensor names layer
    ``i`` reads: ``INPUT`` or earlier layers' ``output``).
``layer``
    ``name``, ``op`` (``"fc"``, ``"conv"``, ``"maxpool"``, ``"avgpool"``,
    ``"gap"`` or ``"add"``), ``output`` (its tensor name), ``in_shape`` (the
    per-sample input shape: ``(K,)`` or ``(H, W, C)``), ``attrs`` (``stride``,
    ``pads``, ``groups``, ``dilation`` of a conv; ``kernel``, ``stride``,
    ``pads`` (and ``ceil_mode`` of a maxpool) of a pool; ``a_m0``, ``a_shift``, ``b_zp``, ``b_m0``, ``b_shift``,
    ``left_shift`` of an add), ``in_zp``, ``out_zp``, ``act_min``, ``act_max``,
    ``m0`` and ``shift`` (int arrays, per output channel; element 0 for the
    vector ops) and, for ``fc`` / ``conv``, ``w`` and ``bias``.
"""

from __future__ import annotations

import numpy as np

from celosia.errors import DriverError

from .conv import conv2d
from .ops import add, avg_pool_requant, fully_connected, global_avg_pool_requant, max_pool

__all__ = ["golden_forward", "golden_tensors"]


def golden_forward(model, x_q: np.ndarray) -> np.ndarray:
    """The golden model's int8 output for int8 inputs ``[samples, in_features]`` (NHWC flattened).

    Parameters
    ----------
    model : QModel-like
        The quantized model (attributes in the module docstring).
    x_q : int8 array ``[samples, ...]``
        The quantized input; each sample is flattened in NHWC order.

    Returns
    -------
    int8 array ``[samples, out_features]``
        The last layer's output, each sample flattened.

    Raises
    ------
    celosia.errors.DriverError
        For a layer whose op has no golden implementation.
    """
    return golden_tensors(model, x_q)[model.layers[-1].output]


def golden_tensors(model, x_q: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the golden model's run on ``x_q`` (as :func:`golden_forward`): its
    name (``model.INPUT`` or a layer's ``output``) -> int8 ``[samples, features]``, each
    sample flattened in NHWC order."""
    n = len(x_q)
    values = {model.INPUT: np.asarray(x_q, dtype=np.int8).reshape(n, -1)}
    for i, layer in enumerate(model.layers):
        xs = [values[name].reshape(n, *layer.in_shape) for name in model.layer_inputs(i)]
        a = layer.attrs
        clamp = dict(act_min=layer.act_min, act_max=layer.act_max)
        single = layer.rounding == "single"
        if layer.op == "fc":
            y = fully_connected(xs[0].reshape(n, -1), layer.in_zp, layer.w, layer.bias,
                                layer.m0, layer.shift, layer.out_zp, **clamp, single_round=single)
        elif layer.op == "conv":
            y = conv2d(xs[0], layer.in_zp, layer.w, layer.bias, layer.m0, layer.shift,
                       layer.out_zp, stride=a.get("stride", (1, 1)),
                       padding=a.get("pads", (0, 0, 0, 0)), groups=a.get("groups", 1),
                       dilation=a.get("dilation", (1, 1)), **clamp, single_round=single)
        elif layer.op == "maxpool":
            y = max_pool(xs[0], a["kernel"], a["stride"], a.get("pads", (0, 0, 0, 0)),
                         ceil_mode=a.get("ceil_mode", False), **clamp)
        elif layer.op == "avgpool":
            y = avg_pool_requant(xs[0], a["kernel"], a["stride"], a.get("pads", (0, 0, 0, 0)),
                                 layer.in_zp, layer.out_zp, int(layer.m0[0]),
                                 int(layer.shift[0]), **clamp)
        elif layer.op == "gap":
            y = global_avg_pool_requant(xs[0], layer.in_zp, layer.out_zp, int(layer.m0[0]),
                                        int(layer.shift[0]), **clamp)
        elif layer.op == "add":
            y = add(xs[0], layer.in_zp, a["a_m0"], a["a_shift"], xs[1], a["b_zp"], a["b_m0"],
                    a["b_shift"], layer.out_zp, int(layer.m0[0]), int(layer.shift[0]),
                    left_shift=a.get("left_shift", 20), **clamp)
        else:
            raise DriverError(f"layer {layer.name!r}: op {layer.op!r} has no golden implementation")
        values[layer.output] = y.reshape(n, -1)
    return values
