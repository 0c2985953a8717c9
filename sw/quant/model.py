"""The quantized model: what the compiler compiles and the golden back end runs.

A :class:`QModel` is a chain of quantized layers with every integer parameter
fixed (int8 weights, int32 bias, per-channel ``M0`` / ``shift``, zero points and
the activation clamp). It is produced by :func:`celosia.sw.quant.quantize_graph`
and is independent of the accelerator configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["QLayer", "QModel"]


@dataclass
class QLayer:
    """``y = clamp(requant(x_q @ w + bias - in_zp * sum_k w) + out_zp, act_min, act_max)``."""
    name: str
    op: str                 # "fc"
    w: np.ndarray           # int8 [K, N], symmetric per output channel
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

    @property
    def in_features(self) -> int:
        return int(self.w.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.w.shape[1])

    @property
    def macs(self) -> int:
        """MACs per sample."""
        return self.in_features * self.out_features

    def folded_bias(self) -> np.ndarray:
        """Bias with the input zero point folded in: ``bias - in_zp * sum_k w[k, n]`` (int32).

        ``sum_k (x - zp) w = sum_k x w - zp sum_k w`` exactly in integers, so the
        array multiplies raw int8 inputs and the PPU adds this bias.
        """
        folded = self.bias.astype(np.int64) - int(self.in_zp) * self.w.astype(np.int64).sum(axis=0)
        if folded.min() < -(1 << 31) or folded.max() >= (1 << 31):
            raise OverflowError(f"layer {self.name}: folded bias does not fit int32")
        return folded.astype(np.int32)


@dataclass
class QModel:
    name: str
    layers: list[QLayer]
    input_scale: float
    input_zp: int
    input_shape: tuple = ()     # per-sample shape of the float input (before flattening)
    meta: dict = field(default_factory=dict)

    @property
    def output_scale(self) -> float:
        return self.layers[-1].out_scale

    @property
    def output_zp(self) -> int:
        return self.layers[-1].out_zp

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float [batch, ...] -> int8 [batch, in_features] (flattened, as the model's Flatten does)."""
        from celosia.sim.golden import quantize
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        return quantize(x, self.input_scale, self.input_zp)

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        from celosia.sim.golden import dequantize
        return dequantize(q, self.output_scale, self.output_zp)

    def macs_per_sample(self) -> int:
        return sum(layer.macs for layer in self.layers)
