"""The quantized model: what the compiler compiles and the golden back end runs.

A :class:`QModel` is a list of quantized layers in execution order, each reading
named tensors and writing one, with every integer parameter fixed (int8 weights,
int32 bias, per-channel ``M0`` / ``shift``, zero points, the activation clamp).
It is produced by :func:`celosia.sw.quant.quantize_graph` and is independent of
the accelerator configuration. Feature maps are per sample: ``(features,)`` for
fully connected layers, ``(H, W, C)`` (NHWC) for convolutions. A layer whose
``inputs`` is empty reads the previous layer's output (or the model input), so a
plain chain needs no names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["QLayer", "QModel", "ROUNDINGS"]


#: What :attr:`QLayer.rounding` may be: the requantization's rounding (STORE ``single_round``).
ROUNDINGS = ("double", "single")


@dataclass
class QLayer:
    """One quantized operator.

    ``fc``: ``w`` int8 ``[K, N]``; ``conv``: ``w`` int8 ``[Cout, Fh, Fw, Cin/groups]``
    with ``attrs`` ``stride (sh, sw)``, ``pads (t, l, b, r)``, ``groups``,
    ``dilation (dh, dw)``. Both: ``y = clamp(requant(sum (x - in_zp) w + bias) +
    out_zp, act_min, act_max)`` per output channel.

    Vector ops (no weights; ``m0`` / ``shift`` hold the output multiplier per channel):
    ``maxpool`` / ``avgpool`` (``attrs`` ``kernel``, ``stride``, ``pads``; maxpool
    keeps the input's scale and zero point), ``gap`` (global average pool) and
    ``add`` (two inputs; ``attrs`` ``a_m0``, ``a_shift``, ``b_m0``, ``b_shift``,
    ``b_zp``, ``left_shift`` as TFLite's int8 Add, ``in_zp`` is the first input's).
    """
    name: str
    op: str                 # "fc" | "conv"
    w: np.ndarray
    bias: np.ndarray        # int32 [N], scale in_scale * w_scale[n]
    m0: np.ndarray          # int32 [N]
    shift: np.ndarray       # int32 [N]
    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int
    act_min: int = -128
    act_max: int = 127
    activation: str = "none"
    w_scale: np.ndarray | None = None  # float32 [N]
    attrs: dict = field(default_factory=dict)
    in_shape: tuple = ()    # per-sample input shape ((K,) for fc, (H, W, C) for conv)
    out_shape: tuple = ()   # per-sample output shape
    inputs: list = field(default_factory=list)  # tensor names; [] = previous output
    output: str = ""        # tensor name; "" = the layer's name
    # the requantization's rounding: "double" (TFLite's default MBQM, gemmlowp) or "single"
    # (TFLite's single-rounding MBQM, as LiteRT's FULLY_CONNECTED); fc / conv only
    rounding: str = "double"
    # the fraction of the input's values at the zero point on the calibration data (a real
    # zero: what feie skips), measured by quantize_graph; None where unknown (a model
    # quantized elsewhere). The feie compiler maps for it (lower_gemm.row_taps); nothing
    # else reads it and no result depends on it.
    in_zeros: float | None = None

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"layer {self.name!r}: rounding must be one of {', '.join(ROUNDINGS)}, "
                             f"not {self.rounding!r}")
        if self.rounding != "double" and self.op not in ("fc", "conv"):
            raise ValueError(f"layer {self.name!r}: rounding {self.rounding!r} is for fc / conv "
                             f"layers, not {self.op}")
        if self.op == "fc":
            if not self.in_shape:
                self.in_shape = (int(self.w.shape[0]),)
            if not self.out_shape:
                self.out_shape = (int(self.w.shape[1]),)
        if not self.output:
            self.output = self.name

    @property
    def in_features(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_features(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def macs(self) -> int:
        """MACs per sample."""
        if self.op == "fc":
            return int(self.w.shape[0] * self.w.shape[1])
        if self.op == "conv":
            ho, wo, cout = self.out_shape
            _, fh, fw, cin_g = self.w.shape
            return int(ho * wo * cout * fh * fw * cin_g)
        return 0

    @property
    def is_gemm(self) -> bool:
        return self.op in ("fc", "conv")

    def gemm_weights(self) -> np.ndarray:
        """Weights as the GEMM's ``[K, N]`` (conv, per group: ``[(fh, fw, cin), cout]``).

        For a grouped convolution the result is ``[groups, K_g, N_g]``.
        """
        if self.op == "fc":
            return self.w
        if not self.is_gemm:
            return np.zeros(0, np.int8)
        cout, fh, fw, cin_g = self.w.shape
        groups = int(self.attrs.get("groups", 1))
        w = self.w.reshape(groups, cout // groups, fh * fw * cin_g)
        return np.ascontiguousarray(w.transpose(0, 2, 1))

    def folded_bias(self) -> np.ndarray:
        """Bias with the input zero point folded in: ``bias - in_zp * sum_k w[k, n]`` (int32).

        ``sum_k (x - zp) w = sum_k x w - zp sum_k w`` exactly in integers, so the
        array multiplies raw int8 inputs (padding inserted as ``in_zp``, which then
        contributes exactly 0) and the PPU adds this bias.
        """
        if not self.is_gemm:
            return np.asarray(self.bias, dtype=np.int32)
        if self.op == "fc":
            wsum = self.w.astype(np.int64).sum(axis=0)
        else:
            wsum = self.w.astype(np.int64).reshape(self.w.shape[0], -1).sum(axis=1)
        folded = self.bias.astype(np.int64) - int(self.in_zp) * wsum
        if folded.min() < -(1 << 31) or folded.max() >= (1 << 31):
            raise OverflowError(f"layer {self.name}: folded bias does not fit int32")
        return folded.astype(np.int32)


@dataclass
class QModel:
    name: str
    layers: list[QLayer]
    input_scale: float
    input_zp: int
    input_shape: tuple = ()     # per-sample shape of the float input as the user gives it
    meta: dict = field(default_factory=dict)
    #: "flat" (any shape, flattened), or "NCHW": user input is NCHW, hardware NHWC
    input_layout: str = "flat"

    INPUT = "input"

    @property
    def output_scale(self) -> float:
        """Scale of the output (``meta["output_qparams"]``, an importer's, else the last layer's)."""
        return self.meta.get("output_qparams", (self.layers[-1].out_scale,))[0]

    @property
    def output_zp(self) -> int:
        return self.meta.get("output_qparams", (0, self.layers[-1].out_zp))[1]

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    def layer_inputs(self, index: int) -> list[str]:
        """Tensor names read by layer ``index`` (resolving the chain default)."""
        layer = self.layers[index]
        if layer.inputs:
            return list(layer.inputs)
        return [self.INPUT if index == 0 else self.layers[index - 1].output]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float ``[batch, ...]`` -> int8 ``[batch, in_features]`` in the hardware's layout (NHWC)."""
        from celosia.sim.golden import quantize
        x = np.asarray(x, dtype=np.float32)
        if self.input_layout == "NCHW" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        x = x.reshape(len(x), -1)
        # meta["input_division"]: "float32" for a TFLite model (LiteRT's QUANTIZE divides in float)
        return quantize(x, self.input_scale, self.input_zp,
                        division=self.meta.get("input_division", "double"))

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        """int8 ``[batch, out_features]`` -> float, NCHW again for a 4-D output of an NCHW model."""
        from celosia.sim.golden import dequantize
        y = dequantize(q, self.output_scale, self.output_zp)
        shape = self.layers[-1].out_shape
        if self.input_layout == "NCHW" and len(shape) == 3:
            y = y.reshape(len(y), *shape).transpose(0, 3, 1, 2)
        return y

    def macs_per_sample(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def source(self) -> str:
        """Where the quantization came from: ``meta["source"]`` (an importer of quantized
        files sets it, e.g. ``"tflite"``), else Celosia's PTQ."""
        return self.meta.get("source", "celosia-ptq")

    def quant_summary(self) -> list[dict]:
        """Per layer: the quantization parameters it runs with (for reports and summaries).

        ``name``, ``op``, ``in_scale`` / ``in_zp``, ``out_scale`` / ``out_zp``, ``w_scale``
        (``[min, max]`` over the output channels, ``None`` without weights),
        ``per_channel`` (more than one distinct weight scale), ``m0`` / ``shift``
        (``[min, max]``) and the clamp ``[act_min, act_max]``.
        """
        def span(a):
            a = np.asarray(a)
            return None if a.size == 0 else [a.min().item(), a.max().item()]

        return [{"name": l.name, "op": l.op, "in_scale": float(l.in_scale), "in_zp": int(l.in_zp),
                 "out_scale": float(l.out_scale), "out_zp": int(l.out_zp),
                 "w_scale": None if l.w_scale is None else span(l.w_scale),
                 "per_channel": l.w_scale is not None and len(np.unique(l.w_scale)) > 1,
                 "m0": span(l.m0), "shift": span(l.shift), "clamp": [int(l.act_min), int(l.act_max)]}
                for l in self.layers]
