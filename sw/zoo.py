"""A model zoo of real layer shapes with random (lazy) weights, for sweeps.

``build(name, seed=0)`` returns a validated :class:`~celosia.sw.graph.Graph`
whose constants are *lazy* (:class:`~celosia.sw.graph.LazyInit`): only shapes
are stored, so building VGG-16 (138 M parameters, 550 MB as float32) is
instant and MAC / parameter counting needs no memory; values are generated
from ``seed`` when a node reads them (``Graph.const``, ``run_float``) or all
at once by ``Graph.materialize()``. Weights are He-normal
(``std = sqrt(2 / fan_in)``), biases ``N(0, 0.01)``, float32, deterministic
per ``(seed, tensor)``.

Graphs are NHWC throughout, input ``"input"`` ``[N, H, W, C]``; conv weights
``[Cout, Fh, Fw, Cin/groups]``; activations are already fused into the conv /
fc / add nodes (``attrs["activation"]``); batch norm is folded (conv + bias).
Pooling, add and flatten count no MACs; the MAC totals are the conv + fc
multiply-accumulates (seed 000: ``N*Ho*Wo*Cout*Fh*Fw*Cin/groups``).

=================  =========  ============  ===================================
name               input      MACs, params  variant
=================  =========  ============  ===================================
``lenet5``         32x32x1    416.5 K, 61.7 K  LeCun 1998 with C3 fully connected
                                            to S2 (no sparse table), C5 a 5x5
                                            conv, ReLU, 2x2 average pooling
``alexnet``        227x227x3  724 M, 61.0 M  Krizhevsky 2012, CONV2/4/5 grouped
                                            (groups=2); no LRN (not an op here)
``vgg16``          224x224x3  15.5 G, 138 M  VGG-16 (configuration D)
``resnet18``       224x224x3  1.82 G, 11.7 M  torchvision ResNet-18
``resnet50``       224x224x3  4.09 G, 25.5 M  torchvision ResNet-50 (v1.5: stride
                                            on the 3x3 conv of a bottleneck)
``mobilenet_v1``   224x224x3  569 M, 4.22 M  MobileNet v1 1.0-224, ReLU6
=================  =========  ============  ===================================

:func:`resolve` turns a model spec into a graph: ``"zoo:resnet18"`` or the
path of an ONNX file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from celosia.errors import InputError
from .graph import Graph, LazyInit

__all__ = ["ZOO", "build", "resolve", "describe", "conv_layer", "tiny_cnn"]


class _Builder:
    """Appends layers to a graph, tracking the current feature map."""

    def __init__(self, name: str, hwc: tuple[int, int, int], seed: int):
        self.g = Graph(name)
        self.g.add_input("input", (None, *hwc))
        self.g.meta.update(layout="NHWC", zoo=name)
        self.x = "input"
        self.seed = seed
        self.count = 0

    def const(self, name: str, shape: tuple, std: float) -> str:
        self.count += 1
        return self.g.add_const(name, shape=shape, init=LazyInit((self.seed, self.count), std)).name

    def channels(self, x: str) -> int:
        return self.g.tensors[x].shape[-1]

    def conv(self, name: str, cout: int, k: int, stride: int = 1, pad: int | None = None,
             groups: int = 1, act="relu", x: str | None = None) -> str:
        x = self.x if x is None else x
        cin = self.channels(x)
        pad = k // 2 if pad is None else pad
        fan_in = k * k * cin // groups
        w = self.const(f"{name}.weight", (cout, k, k, cin // groups), math.sqrt(2.0 / fan_in))
        b = self.const(f"{name}.bias", (cout,), 0.01)
        self.g.add_node("conv", name, [x, w, b], [f"{name}.out"], stride=(stride, stride),
                        pads=(pad,) * 4, groups=groups, dilation=(1, 1), activation=act)
        self.x = f"{name}.out"
        return self.x

    def pool(self, op: str, name: str, k: int, stride: int, pad: int = 0) -> str:
        self.g.add_node(op, name, [self.x], [f"{name}.out"], kernel=(k, k),
                        stride=(stride, stride), pads=(pad,) * 4)
        self.x = f"{name}.out"
        return self.x

    def gap(self, name: str = "gap") -> str:
        self.g.add_node("gap", name, [self.x], [f"{name}.out"])
        self.x = f"{name}.out"
        return self.x

    def flatten(self, name: str = "flatten") -> str:
        self.g.add_node("flatten", name, [self.x], [f"{name}.out"])
        self.x = f"{name}.out"
        return self.x

    def fc(self, name: str, n: int, act="relu") -> str:
        k = self.g.tensors[self.x].shape[1]
        w = self.const(f"{name}.weight", (k, n), math.sqrt((2.0 if act else 1.0) / k))
        b = self.const(f"{name}.bias", (n,), 0.01)
        self.g.add_node("fc", name, [self.x, w, b], [f"{name}.out"], activation=act)
        self.x = f"{name}.out"
        return self.x

    def add(self, name: str, a: str, b: str, act="relu") -> str:
        self.g.add_node("add", name, [a, b], [f"{name}.out"], activation=act)
        self.x = f"{name}.out"
        return self.x

    def done(self) -> Graph:
        self.g.add_output(self.x)
        self.g.validate()
        return self.g


def _lenet5(seed: int) -> Graph:
    b = _Builder("lenet5", (32, 32, 1), seed)
    b.conv("c1", 6, 5, pad=0)
    b.pool("avgpool", "s2", 2, 2)
    b.conv("c3", 16, 5, pad=0)
    b.pool("avgpool", "s4", 2, 2)
    b.conv("c5", 120, 5, pad=0)
    b.flatten()
    b.fc("f6", 84)
    b.fc("output", 10, act=None)
    return b.done()


def _alexnet(seed: int) -> Graph:
    b = _Builder("alexnet", (227, 227, 3), seed)
    b.conv("conv1", 96, 11, stride=4, pad=0)
    b.pool("maxpool", "pool1", 3, 2)
    b.conv("conv2", 256, 5, pad=2, groups=2)
    b.pool("maxpool", "pool2", 3, 2)
    b.conv("conv3", 384, 3)
    b.conv("conv4", 384, 3, groups=2)
    b.conv("conv5", 256, 3, groups=2)
    b.pool("maxpool", "pool5", 3, 2)
    b.flatten()
    b.fc("fc6", 4096)
    b.fc("fc7", 4096)
    b.fc("fc8", 1000, act=None)
    return b.done()


def _vgg16(seed: int) -> Graph:
    b = _Builder("vgg16", (224, 224, 3), seed)
    for stage, (n, c) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for i in range(1, n + 1):
            b.conv(f"conv{stage}_{i}", c, 3)
        b.pool("maxpool", f"pool{stage}", 2, 2)
    b.flatten()
    b.fc("fc6", 4096)
    b.fc("fc7", 4096)
    b.fc("fc8", 1000, act=None)
    return b.done()


def _resnet(name: str, blocks: list[int], bottleneck: bool, seed: int) -> Graph:
    b = _Builder(name, (224, 224, 3), seed)
    b.conv("conv1", 64, 7, stride=2, pad=3)
    b.pool("maxpool", "maxpool", 3, 2, pad=1)
    expansion = 4 if bottleneck else 1
    for stage, (n, width) in enumerate(zip(blocks, [64, 128, 256, 512]), 1):
        for i in range(n):
            stride = 2 if stage > 1 and i == 0 else 1
            p = f"layer{stage}.{i}"
            inp, cout = b.x, width * expansion
            if bottleneck:
                b.conv(f"{p}.conv1", width, 1, pad=0, x=inp)
                b.conv(f"{p}.conv2", width, 3, stride=stride)
                last = b.conv(f"{p}.conv3", cout, 1, pad=0, act=None)
            else:
                b.conv(f"{p}.conv1", width, 3, stride=stride, x=inp)
                last = b.conv(f"{p}.conv2", cout, 3, act=None)
            skip = inp
            if stride != 1 or b.channels(inp) != cout:
                skip = b.conv(f"{p}.downsample", cout, 1, stride=stride, pad=0, act=None, x=inp)
            b.add(f"{p}.add", last, skip)
    b.gap("avgpool")
    b.flatten()
    b.fc("fc", 1000, act=None)
    return b.done()


def _mobilenet_v1(seed: int) -> Graph:
    b = _Builder("mobilenet_v1", (224, 224, 3), seed)
    b.conv("conv0", 32, 3, stride=2, act="relu6")
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    for i, (cout, stride) in enumerate(cfg, 1):
        c = b.channels(b.x)
        b.conv(f"conv{i}.dw", c, 3, stride=stride, groups=c, act="relu6")
        b.conv(f"conv{i}.pw", cout, 1, pad=0, act="relu6")
    b.gap("avgpool")
    b.flatten()
    b.fc("fc", 1000, act=None)
    return b.done()


#: Model name -> builder ``f(seed) -> Graph``.
ZOO: dict[str, Callable[[int], Graph]] = {
    "lenet5": _lenet5,
    "alexnet": _alexnet,
    "vgg16": _vgg16,
    "resnet18": lambda seed: _resnet("resnet18", [2, 2, 2, 2], False, seed),
    "resnet50": lambda seed: _resnet("resnet50", [3, 4, 6, 3], True, seed),
    "mobilenet_v1": _mobilenet_v1,
}


def tiny_cnn(seed: int = 5) -> Graph:
    """A small float CNN (12x12x3, 64 k MACs) using every hardware op: conv with padding,
    stride and groups, max and average pooling, a residual add, global average pooling
    and fc. For tests, and as the training run of the Verilator build's profile."""
    b = _Builder("tiny_cnn", (12, 12, 3), seed=seed)
    b.conv("c1", 8, 3)
    skip = b.pool("maxpool", "p1", 3, 2, pad=1)
    b.conv("c2", 8, 3)
    b.conv("c3", 8, 3, act=None)
    b.add("add", b.x, skip)
    b.pool("avgpool", "p2", 2, 2)
    b.conv("c4", 12, 5, stride=2, pad=2, groups=2)
    b.gap()
    b.flatten()
    b.fc("fc", 10, act=None)
    return b.done()


def conv_layer(h: int, w: int, cin: int, cout: int, k: int, stride: int = 1,
               pad: int | None = None, groups: int = 1, act="relu", seed: int = 0) -> Graph:
    """One convolution (``h x w x cin`` input, ``cout`` filters of ``k x k``) as a graph,
    e.g. a single layer of a zoo model for benchmarks and layer tests."""
    b = _Builder(f"conv{k}x{k}_{h}x{w}x{cin}_{cout}", (h, w, cin), seed)
    b.conv("conv", cout, k, stride=stride, pad=pad, groups=groups, act=act)
    return b.done()


def build(name: str, seed: int = 0) -> Graph:
    """The zoo model ``name`` (a key of :data:`ZOO`) with lazy random weights from ``seed``."""
    key = name.lower().replace("-", "").replace("_", "")
    for k, fn in ZOO.items():
        if k.replace("_", "") == key:
            return fn(int(seed))
    raise InputError(f"no model '{name}' in the zoo; models: {', '.join(ZOO)}")


def describe(graph: Graph, batch: int = 1) -> dict:
    """Totals: ``{name, macs, params, param_bytes}`` for ``batch`` samples."""
    return {"name": graph.name, "macs": graph.total_macs(batch), "params": graph.num_params(),
            "param_bytes": graph.total_param_bytes()}


def resolve(spec: str | Path, seed: int = 0) -> Graph:
    """A model spec as a graph: ``"zoo:NAME"`` (see :data:`ZOO`) or an ONNX file's path."""
    s = str(spec)
    if s.startswith("zoo:"):
        return build(s[4:], seed)
    if s.lower().endswith(".onnx") or Path(s).is_file():
        from .importer import load_onnx
        return load_onnx(s)
    raise InputError(f"model '{s}': expected 'zoo:NAME' (one of {', '.join(ZOO)}) "
                     f"or an .onnx file")
