"""Train two small demo CNNs on digits and write them as float ONNX models.

    python -m celosia.examples.train_digits_cnn [--out-dir sw/data/]

Needs PyTorch (``pip install celosia[train]``); the shipped ``.onnx`` files and
everything that reads them do not. The 8x8 images of :func:`digits_split` are
fed as NCHW ``[N, 1, 8, 8]``:

* ``digits_cnn.onnx``: conv3x3(1->8, pad 1) - relu - conv3x3(8->16, pad 1) -
  relu - maxpool 2x2 - flatten - fc(16*4*4 -> 10).
* ``digits_resnet.onnx``: conv3x3(1->C, stride 2, pad 1) + BN - relu, one
  residual block [conv3x3(C->C) + BN - relu - conv3x3(C->C) + BN] + skip - Add -
  relu - GlobalAveragePool - flatten - fc(C -> 10), with ``C = RESNET_WIDTH``.

Fixed seeds, a few epochs of Adam on CPU. Both are exported with PyTorch's
TorchScript-based exporter (``dynamo=False``) in eval mode, which folds each
BatchNormalization into the Conv before it, so the files hold only Conv, Relu,
MaxPool, Add, GlobalAveragePool, Flatten and Gemm. Input ``input`` with a
dynamic batch ``N``, output ``logits`` (no softmax). Each file is checked
against PyTorch with onnxruntime before it is kept.
"""

from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

import numpy as np
import onnx

from celosia.sw.data import DATA_DIR, digits_split

SEED = 0
DEFAULT_OUT_DIR = DATA_DIR  # the library's package data (celosia.sw.data), where the demo reads them
# Opset / IR pinned so any onnxruntime >= 1.17 (our floor) loads the files.
OPSET = 13
IR_VERSION = 8
EPOCHS = 40
BATCH = 32
LR = 3e-3
RESNET_WIDTH = 8
#: onnxruntime vs PyTorch on the held-out images.
ATOL = 1e-4


def build_models():
    """``{name: torch module}`` for the two architectures (fresh, seeded weights)."""
    import torch
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = self.pool(torch.relu(self.conv2(x)))
            return self.fc(torch.flatten(x, 1))

    class DigitsResNet(nn.Module):
        def __init__(self, c: int = RESNET_WIDTH):
            super().__init__()
            self.stem = nn.Conv2d(1, c, 3, stride=2, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(c)
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(c, 10)

        def forward(self, x):
            x = torch.relu(self.stem_bn(self.stem(x)))
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            x = torch.relu(x + y)
            return self.fc(torch.flatten(self.gap(x), 1))

    torch.manual_seed(SEED)
    return {"digits_cnn": DigitsCNN(), "digits_resnet": DigitsResNet()}


def train(model, x_train: np.ndarray, y_train: np.ndarray, epochs: int = EPOCHS):
    """Adam on cross-entropy with a cosine learning-rate schedule; returns the model in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(x_train.reshape(-1, 1, 8, 8))
    y = torch.from_numpy(y_train)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def to_onnx(model, name: str) -> onnx.ModelProto:
    """The eval-mode model as ONNX (BatchNormalization folded into Conv), logits out."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but folds BN into Conv and needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), buf, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=OPSET, do_constant_folding=True)
    m = onnx.load_from_string(buf.getvalue())
    m.ir_version = IR_VERSION
    m.graph.name = name
    m.producer_name = "celosia.examples.train_digits_cnn"
    m.producer_version = ""
    onnx.checker.check_model(m)
    return m


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args(argv)

    # Tiny models: one thread is both faster (no thread hand-off per small op) and reproducible.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, x_test, y_train, y_test = digits_split()
    xt = x_test.reshape(-1, 1, 8, 8)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, model in build_models().items():
        model = train(model, x_train, y_train, args.epochs)
        onnx_model = to_onnx(model, name)
        data = onnx_model.SerializeToString()

        with torch.no_grad():
            ref = model(torch.from_numpy(xt)).numpy()
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        logits = sess.run(None, {"input": xt})[0]
        err = float(np.abs(logits - ref).max())
        if not np.allclose(logits, ref, atol=ATOL, rtol=0):
            raise SystemExit(f"{name}: ONNX logits differ from PyTorch's (max |diff| {err:.2e})")

        out = args.out_dir / f"{name}.onnx"
        out.write_bytes(data)
        acc = float((logits.argmax(1) == y_test).mean())
        n_params = sum(p.numel() for p in model.parameters())
        ops = ", ".join(n.op_type for n in onnx_model.graph.node)
        print(f"{name}: {n_params} parameters, {args.epochs} epochs; float test accuracy "
              f"{acc:.4f} on {len(y_test)} held-out images (onnxruntime vs PyTorch max |diff| "
              f"{err:.1e}); wrote {out} ({out.stat().st_size} bytes): {ops}")


if __name__ == "__main__":
    main()
