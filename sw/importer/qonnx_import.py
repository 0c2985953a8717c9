"""Import of QONNX models (Brevitas / FINN ``Quant`` nodes) into a :class:`~celosia.sw.quant.QModel`.

QONNX (Pappalardo et al., the ``qonnx`` package) writes quantization as one op,
``Quant(x, scale, zeropt, bitwidth)`` in the domain ``qonnx.custom_op.general``
(Brevitas also writes ``onnx.brevitas``), with attributes ``signed``, ``narrow`` and
``rounding_mode``. Its output is float: ``(clamp_round(x / scale + zeropt) - zeropt) *
scale``, a QuantizeLinear and a DequantizeLinear in one node. So the QDQ reader of
:mod:`celosia.sw.importer.onnx_quant_import` reads it, with ``Quant`` in both roles:

* ``Quant`` of a float initializer: constant integer weights ``round(w / scale + zeropt)``,
  clamped (per-channel when ``scale`` has one value per output channel). The
  weights must be signed with ``zeropt`` 0 (symmetric).
* ``Quant`` of the model input or of a float op's output: an activation with scale
  and zero point. 8-bit signed activations are int8 as they are; 8-bit unsigned ones
  (Brevitas' ``QuantReLU``) are int8 with the zero point moved by -128 (``q - 128``,
  exact); ``narrow`` narrows the layer's clamp by one step (-127..127, or 0..254 ->
  -128..126).
* The float bias of a Conv / Gemm (Brevitas leaves it float) is rounded to int32 at
  ``S_in * S_w``.

``rounding_mode`` must be ``ROUND`` (half to even; the PPU rounds half away from zero, so
exact ties may differ by one step) and ``zeropt`` an integer. Bit widths other than 8
import (they are kept in ``QOp.w_bits`` / ``QTensor.bits`` and ``model.meta["bits"]``) and
then stop at :func:`~celosia.sw.importer.onnx_quant_import.build_qmodel` with "not
supported by this accelerator config: N bits" naming the node, until sub-8-bit arrays
exist.
"""

from __future__ import annotations

import numpy as np

from celosia.errors import ModelError
from celosia.sw.importer.onnx_quant_import import DIALECTS, _attrs, _Reader

__all__ = ["QONNX_DOMAINS", "quant_range", "QonnxReader"]

#: Domains the ``Quant`` op is found in.
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")


def quant_range(signed: bool, narrow: bool, bits: int) -> tuple[int, int]:
    """QONNX's integer range ``(min_int, max_int)`` of a ``Quant`` node."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


class QonnxReader(_Reader):
    """The QDQ reader with QONNX's ``Quant`` op (see the module docstring)."""

    DOMAINS = _Reader.DOMAINS + QONNX_DOMAINS
    QUANTIZER = "Quant"

    def source(self) -> str:
        return "qonnx"

    def _quant_params(self, node):
        a = _attrs(node)
        mode = a.get("rounding_mode", b"ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
        if mode not in ("ROUND", "HALF_EVEN"):
            raise ModelError(f"{self.where(node)}: rounding_mode {mode} is not supported; the "
                             f"accelerator rounds to nearest (ROUND)")
        if len(node.input) < 4:
            raise ModelError(f"{self.where(node)}: Quant needs 4 inputs (x, scale, zeropt, "
                             f"bitwidth), not {len(node.input)}")
        scale = np.asarray(self.const(node, node.input[1], "scale"), np.float32)
        zp = np.asarray(self.const(node, node.input[2], "zero point"), np.float64)
        bits = np.asarray(self.const(node, node.input[3], "bit width"), np.float64)
        if bits.size != 1 or bits.reshape(()) != np.round(bits.reshape(())) or bits.reshape(()) < 2:
            raise ModelError(f"{self.where(node)}: bit width {bits.tolist()} must be one integer "
                             f">= 2 (bipolar / 1-bit Quant is not supported)")
        if np.any(zp != np.round(zp)):
            raise ModelError(f"{self.where(node)}: zero point {zp.tolist()} is not an integer")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ModelError(f"{self.where(node)}: scale must be finite and > 0")
        return scale, zp, int(bits.reshape(())), bool(a.get("signed", 1)), bool(a.get("narrow", 0))

    def op_Quant(self, node):
        x, y = node.input[0], node.output[0]
        scale, zp, bits, signed, narrow = self._quant_params(node)
        lo, hi = quant_range(signed, narrow, bits)
        if x in self.init:
            self._weights(node, x, y, scale, zp, bits, signed, lo, hi)
            return
        where = f"{self.where(node)}: tensor '{y}'"
        if scale.size != 1 or zp.size != 1:
            raise ModelError(f"{where} has {scale.size} scales (per-axis); an activation needs one "
                             f"(per-tensor) scale and zero point")
        # unsigned 8-bit: the same reals with int8 integers q - 128 (zero point - 128)
        shift = 0 if signed or bits != 8 else -128
        q = (float(scale.reshape(())), int(zp.reshape(())) + shift)
        if bits == 8 and not -128 <= q[1] <= 127:
            raise ModelError(f"{where} has zero point {q[1] - shift} outside the {bits}-bit range")
        clamp = (lo + shift, hi + shift) if bits == 8 and (lo + shift, hi + shift) != (-128, 127) \
            else None
        if x in self.pending:
            rec = self.pending.pop(x)
            rec.output, rec.out_q = y, q
            self.emit(rec)
        elif self.requantized(node, x, y, q):
            pass
        elif self.input_q is None and x in {i.name for i in self.graph_inputs}:
            if clamp:
                raise ModelError(f"{where}: a narrow range on the model input is not supported")
            self.input_q = self.add_tensor(y, self._input_shape(node, x), q)
            self.float_input = True
        else:
            raise ModelError(f"{self.where(node)}: its input '{x}' is neither the model input nor "
                             f"the output of a supported op (a requantization of a quantized "
                             f"tensor is not supported)")
        self.formats.add("qdq")
        t = self.tensors[y]
        t.bits, t.clamp = bits, clamp
        self.deq[y] = y  # the Quant's float output is its own dequantization

    def _weights(self, node, x, y, scale, zp, bits, signed, lo, hi):
        w = np.asarray(self.init[x], np.float64)
        where = f"{self.where(node)}: weight '{x}'"
        if not signed:
            raise ModelError(f"{where} is unsigned; the accelerator needs signed symmetric weights")
        if np.any(zp != 0):
            raise ModelError(f"{where} has zero point {float(zp[zp != 0][0]):g}: asymmetric "
                             f"weights; the accelerator needs symmetric weights (zero point 0)")
        per = [d for d, n in enumerate(scale.shape) if n > 1]
        if len(per) > 1:
            raise ModelError(f"{where} has scales of shape {list(scale.shape)}; one axis at most")
        axis = per[0] + w.ndim - scale.ndim if per else 0
        # QONNX's IntQuant: clamp, then round half to even
        q = np.round(np.clip(w / scale.astype(np.float64), lo, hi))
        self.consts[y] = (q.astype(np.int8 if bits <= 8 else np.int32), scale.reshape(-1),
                          np.zeros(1, np.int8), axis, node, x)
        self.const_bits[y] = bits


DIALECTS["Quant"] = QonnxReader
