"""Train a small Brevitas CNN on the digits, export it as QONNX and run it on Celosia.

Needs the optional extra ``pip install -e ".[brevitas]"`` (torch, brevitas, qonnx);
not run in CI (the tests build their QONNX models without torch:
:func:`celosia.examples.make_qdq.qdq_to_qonnx`).

``python -m celosia.examples.brevitas_qonnx [OUT.onnx] [--weight-bits N]`` trains an
MNIST-style quantization-aware net (8-bit input ``QuantIdentity``, two ``QuantConv2d`` +
``QuantReLU``, max pooling, ``QuantLinear``; per-channel weights of ``N`` bits, float
biases) for a few epochs on the digits training split, exports it with
``brevitas.export.export_qonnx``, cleans it with qonnx's ``cleanup_model``, imports it
with :func:`celosia.sw.importer.load_onnx_quant` and prints the accuracy of Celosia's
golden model and its agreement with qonnx's executor on the held-out split. With
``--weight-bits`` below 8 the import stops with "not supported by this accelerator
config: N bits".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["build_net", "train", "export", "main"]


def build_net(weight_bits: int = 8):
    """The Brevitas net (a ``torch.nn.Module``) for 1x8x8 inputs and 10 classes."""
    import brevitas.nn as qnn
    import torch
    from torch import nn

    w = dict(weight_bit_width=weight_bits, weight_scaling_per_output_channel=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
            self.conv1 = qnn.QuantConv2d(1, 8, 3, padding=1, bias=True, **w)
            self.relu1 = qnn.QuantReLU(bit_width=8, return_quant_tensor=True)
            self.conv2 = qnn.QuantConv2d(8, 16, 3, padding=1, bias=True, **w)
            self.relu2 = qnn.QuantReLU(bit_width=8, return_quant_tensor=True)
            self.pool = nn.MaxPool2d(2)
            self.fc = qnn.QuantLinear(16 * 4 * 4, 10, bias=True, **w)
            self.out = qnn.QuantIdentity(bit_width=8)

        def forward(self, x):
            x = self.relu1(self.conv1(self.inp(x)))
            x = self.pool(self.relu2(self.conv2(x)))
            return self.out(self.fc(torch.flatten(x, 1)))

    return Net()


def train(net, epochs: int = 10, seed: int = 0):
    """A few epochs of Adam on the digits training split (about a minute on a CPU)."""
    import torch
    from celosia.sw.data import digits_split

    torch.manual_seed(seed)
    x, _, y, _ = digits_split()
    x = torch.tensor(x.reshape(-1, 1, 8, 8))
    y = torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    net.eval()
    return net


def export(net, path: Path) -> Path:
    """``net`` as a cleaned-up QONNX file at ``path``."""
    import torch
    from brevitas.export import export_qonnx
    from qonnx.util.cleanup import cleanup

    export_qonnx(net, torch.zeros(1, 1, 8, 8), export_path=str(path))
    cleanup(str(path), out_file=str(path))
    return path


def main(argv=None) -> int:
    from celosia.errors import CelosiaError
    from celosia.sim.golden.network import golden_forward
    from celosia.sw.data import digits_split
    from celosia.sw.importer import load_onnx_quant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="digits_brevitas_qonnx.onnx")
    ap.add_argument("--weight-bits", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args(argv)
    path = export(train(build_net(args.weight_bits), args.epochs), Path(args.out))
    print(f"wrote {path}")
    try:
        model = load_onnx_quant(path)
    except CelosiaError as e:
        print(f"celosia: {e}")
        return 1
    _, x_test, _, y_test = digits_split()
    x_q = model.quantize_input(x_test.reshape(-1, 1, 8, 8))
    y_q = golden_forward(model, x_q)
    print(f"layers: {' -> '.join(l.op for l in model.layers)}; accuracy on the held-out split "
          f"{(y_q.argmax(1) == y_test).mean():.2%}")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    mw = ModelWrapper(str(path))
    name = mw.graph.input[0].name
    xf = (x_q.astype(np.float32) - model.input_zp) * np.float32(model.input_scale)
    xf = xf.reshape(-1, 8, 8, 1).transpose(0, 3, 1, 2)
    ref = np.concatenate([execute_onnx(mw, {name: xf[i:i + 1]})[mw.graph.output[0].name]
                          for i in range(len(xf))]).reshape(len(xf), -1)
    ref_q = np.round(ref / np.float32(model.output_scale)) + model.output_zp
    diff = np.abs(ref_q - y_q)
    print(f"against qonnx's executor: {int((diff > 0).sum())} of {diff.size} elements differ, "
          f"max {int(diff.max())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
