"""Grouped convolutions with few channels per group, merged into fewer, block-diagonal groups.

A depthwise 3x3 convolution (``groups = C``, one input and one output channel per group)
lowered group by group gives every GEMM ``k_len = 1`` and ``n_len = 1``: one PE of the
``rows x cols`` array works (1.6% of an 8x8 array on MobileNet v1's first depthwise layer).
:func:`merge_groups` rewrites such a layer before lowering as the same convolution with
``q`` times fewer groups: group ``h`` of the new layer takes the ``q`` old groups
``h*q .. h*q + q - 1`` (their input channels and their output channels, both contiguous
and in the same order), and its weight tensor is block-diagonal, old group ``j`` of the
``q`` in the diagonal block ``j`` and zeros elsewhere. Every output channel sums the same
products as before plus products with zero weights, so the int32 sums, hence the
outputs, are unchanged bit for bit (a zero weight contributes 0 for any input,
including the zero-point correction folded into the bias, which sums the weights).
``q`` is the largest divisor of ``groups`` whose merged group has at most ``rows`` input
channels and ``cols`` output channels (one weight tile, ``k_len`` on the PE rows and
``n_len`` on the PE columns): 8 on an 8x8 array for a depthwise layer, so each GEMM does
``q`` times the work for the same cycles.

What it costs: the weights in DRAM grow ``q``-fold (the zeros are stored; a depthwise
layer's weights are small) and the hardware's MAC counter (``hw_macs``) counts the MACs
with zero weights too. The report's ``macs`` stay the layer's own
(:attr:`~celosia.sw.quant.model.QLayer.macs` of the layer as the model gives it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from celosia.rtl.config import AccelConfig
from celosia.sw.quant.model import QLayer, QModel

__all__ = ["merge_groups", "merge_model_groups"]


def group_factor(layer: QLayer, config: AccelConfig) -> int:
    """``q`` of :func:`merge_groups` for ``layer`` (1: left as it is)."""
    if layer.op != "conv":
        return 1
    groups = int(layer.attrs.get("groups", 1))
    cout_g, cin_g = layer.w.shape[0] // groups, layer.w.shape[3]
    return max(q for q in range(1, groups + 1)
               if groups % q == 0 and q * cin_g <= max(config.rows, cin_g)
               and q * cout_g <= max(config.cols, cout_g))


def merge_groups(layer: QLayer, config: AccelConfig) -> QLayer:
    """``layer`` with its groups merged ``q`` at a time into block-diagonal groups (module
    docstring); ``layer`` itself when ``q`` is 1 (not a grouped conv, or its groups
    already fill a weight tile)."""
    q = group_factor(layer, config)
    if q == 1:
        return layer
    groups = int(layer.attrs["groups"])
    cout, fh, fw, cin_g = layer.w.shape
    cout_g = cout // groups
    w = np.zeros((cout, fh, fw, q * cin_g), dtype=layer.w.dtype)
    for c in range(cout):
        j = (c // cout_g) % q          # the old group's place in its merged group
        w[c, :, :, j * cin_g:(j + 1) * cin_g] = layer.w[c]
    return dataclasses.replace(layer, w=w, attrs={**layer.attrs, "groups": groups // q})


def merge_model_groups(model: QModel, config: AccelConfig) -> QModel:
    """``model`` with :func:`merge_groups` applied to every layer (the same object when no
    layer changes)."""
    layers = [merge_groups(layer, config) for layer in model.layers]
    if all(a is b for a, b in zip(layers, model.layers)):
        return model
    return dataclasses.replace(model, layers=layers)
