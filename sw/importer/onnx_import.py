"""Float ONNX models -> :class:`celosia.sw.graph.Graph`.

Supported ONNX ops and what they become:

* ``Gemm`` (any ``alpha``, ``beta``, ``transB``; ``transA=0``) -> ``fc`` with
  ``weight = alpha * op(B)`` as ``[K, N]`` and ``bias = beta * C`` as ``[N]``.
* ``MatMul`` with a constant right-hand side -> ``fc``; when its only reader is
  an ``Add`` of a constant ``[N]`` (how exporters spell a linear layer), the
  pair becomes one ``fc`` with that bias.
* ``Conv`` (2-D; ``pads``, ``auto_pad`` NOTSET / VALID / SAME_UPPER /
  SAME_LOWER, ``strides``, ``group``, ``dilations``) -> ``conv`` with the weight
  transposed from ONNX ``[Cout, Cin/g, Fh, Fw]`` to OHWI ``[Cout, Fh, Fw, Cin/g]``.
  A ``BatchNormalization`` that alone reads a Conv's output is folded into it:
  ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps)
  + beta``. A BatchNormalization anywhere else is an error.
* ``MaxPool`` (``ceil_mode`` too), ``AveragePool`` (``count_include_pad``; ``ceil_mode``
  only where it leaves the output size unchanged),
  ``GlobalAveragePool`` -> ``maxpool``, ``avgpool``, ``gap``.
* ``Add`` of two feature maps -> ``add`` (a residual connection); ``Add`` of a
  constant is accepted only as a MatMul's bias (above).
* ``Relu`` -> ``relu``; ``Clip`` (min / max from inputs, opset >= 11, or
  attributes) -> ``clip``. :func:`celosia.sw.graph.fuse_activations` folds them
  into the conv / fc / add before them (``Clip(0, 6)`` becomes ``relu6``); a
  separate pass so each step can be checked alone.
* ``Flatten`` (``axis=1``) and ``Reshape`` to ``[batch, -1]`` -> ``flatten``.
* ``Identity``, ``Dropout`` (inference: pass-through) and ``Constant`` leave no node.

Layout. The graph computes in NHWC; the model's NCHW input stays the graph
input (same shape and data as for onnxruntime) and a ``transpose`` node
(``perm=(0, 2, 3, 1)``) is inserted before the first spatial op that reads it;
a 4-D output computed in NHWC gets a ``transpose`` back to NCHW under the
file's output name. Such graphs have ``graph.meta["input_nchw"] = True``.

Flatten order. ONNX flattens NCHW maps in (C, H, W) order; the graph's
``flatten`` is a plain reshape of NHWC data, i.e. (H, W, C) order, which moves
no data on the accelerator. When a Flatten / Reshape of an NHWC map with
``H*W > 1`` is read only by Gemm / MatMul (through Identity / Dropout at most),
the importer permutes the *rows of those fc weights* from (C, H, W) to
(H, W, C) order, so the results are those of the file; otherwise it inserts a
``transpose`` back to NCHW before the ``flatten``.

Anything else is a :class:`ModelError` naming the file, the node and the op:
running an unsupported op approximately would be a silent wrong answer.
The batch (first) dimension of the model input is recorded as ``None``
whatever the file says; every other dimension must be fixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from celosia.errors import ModelError
from ..graph import Graph

__all__ = ["load_onnx", "SUPPORTED_OPS"]

#: ONNX op types the importer accepts (``Add`` of a constant only as a MatMul's
#: bias, ``BatchNormalization`` only after a Conv).
SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Clip", "Constant", "Conv",
                 "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "Identity", "MatMul",
                 "MaxPool", "Relu", "Reshape")


def load_onnx(path: str | Path) -> Graph:
    """Read a float ONNX model into a validated :class:`Graph`.

    Raises :class:`ModelError` for a missing or unreadable file, an unsupported
    op (naming the node, the op and :data:`SUPPORTED_OPS`) or an unsupported use
    of a supported one (e.g. ``Gemm`` with ``transA=1``).
    """
    try:
        return _Importer(_read(Path(path)), str(path)).run()
    except ModelError as e:  # the graph's own checks name the node, not the file
        if str(e).startswith(f"{path}: "):
            raise
        raise ModelError(f"{path}: {e}") from None


def _read(path: Path) -> onnx.ModelProto:
    """The model in ``path``, checked by ``onnx.checker`` with ``full_check`` (strict type
    and shape inference: an initializer whose type the op does not take, e.g. a float64
    Conv weight, which onnxruntime rejects too)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf errors have no common base
        raise ModelError(f"{path}: not a valid ONNX model ({_one_line(e)})") from None
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if not vi.type.HasField("tensor_type"):
                continue
            if not vi.type.tensor_type.HasField("shape"):
                raise ModelError(f"{path}: {kind} '{vi.name}' has no shape; ONNX requires one on "
                                 f"every graph input and output (dimensions may be symbolic)")
            for j, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value < 1:
                    raise ModelError(f"{path}: {kind} '{vi.name}': dimension {j} is {d.dim_value}; "
                                     f"every dimension must be at least 1")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # checker and shape-inference errors have no common base
        raise ModelError(f"{path}: not a valid ONNX model ({_one_line(e)})") from None
    return model


def _one_line(e: Exception) -> str:
    """An exception's whole message on one line (the checker's spans several and names
    the node on the second)."""
    return " ".join(str(e).split()) or type(e).__name__


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, model: onnx.ModelProto, path: str):
        self.model = model
        self.path = path
        self.graph = Graph(model.graph.name or Path(path).stem)
        self.consts: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        self.alias: dict[str, str] = {}
        self.batch: int | None = None  # the file's fixed batch size, if it has one
        self.readers: dict[str, list[int]] = {}
        for i, node in enumerate(model.graph.node):
            for name in node.input:
                self.readers.setdefault(name, []).append(i)
        self.onnx_outputs = {o.name for o in model.graph.output}
        self.nhwc: set[str] = set()             # graph tensors held NHWC
        self.to_nhwc: dict[str, str] = {}       # NCHW tensor -> its transposed copy
        self.flat_hwc: dict[str, tuple] = {}    # flatten output (H, W, C order) -> (C, H, W)
        self.nchw_out = False                   # a 4-D output was transposed back to NCHW

    def error(self, node_name: str, op: str, what: str) -> ModelError:
        return ModelError(f"{self.path}: node '{node_name}' ({op}): {what}")

    # tensors

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def fmap(self, name: str, node_name: str, op: str) -> str:
        """The graph tensor a node reads as its (non-constant) feature-map input."""
        name = self.resolve(name)
        if name in self.consts:
            raise self.error(node_name, op, f"input '{name}' is a constant; "
                             f"constant folding is not supported")
        return name

    def const(self, name: str, node_name: str, op: str, role: str) -> np.ndarray:
        name = self.resolve(name)
        if name not in self.consts:
            raise self.error(node_name, op, f"{role} '{name}' must be a constant "
                             f"(initializer), not a computed tensor")
        return self.consts[name]

    def new_const(self, name: str, data: np.ndarray) -> str:
        base, i = name, 1
        while name in self.graph.tensors:
            name, i = f"{base}_{i}", i + 1
        self.graph.add_const(name, np.ascontiguousarray(data, dtype=np.float32))
        return name

    # the walk

    def run(self) -> Graph:
        nodes = list(self.model.graph.node)
        names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
        for name, node in zip(names, nodes):
            if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
                op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                raise ModelError(f"{self.path}: node '{name}' has op {op}, which is not "
                                 f"supported; supported: {', '.join(SUPPORTED_OPS)}")
        self.add_inputs()
        fused: set[int] = set()
        for i, (name, node) in enumerate(zip(names, nodes)):
            if i in fused:
                continue
            handler = getattr(self, f"op_{node.op_type.lower()}")
            absorbed = handler(node, name, i)
            if absorbed is not None:
                fused.add(absorbed)
        self.add_outputs()
        if self.to_nhwc or self.nchw_out:
            self.graph.meta["input_nchw"] = True
        self.graph.validate()
        return self.graph

    def add_inputs(self) -> None:
        for vi in self.model.graph.input:
            if vi.name in self.consts:
                continue  # old exporters list initializers as inputs too
            where = f"{self.path}: input '{vi.name}'"
            ttype = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or ttype.elem_type != onnx.TensorProto.FLOAT:
                elem = onnx.TensorProto.DataType.Name(ttype.elem_type) if ttype.elem_type else "?"
                raise ModelError(f"{where} must be a float tensor, not {elem}")
            if not ttype.HasField("shape") or len(ttype.shape.dim) < 1:
                raise ModelError(f"{where} must have a shape with a batch dimension")
            dims = ttype.shape.dim
            if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                self.batch = dims[0].dim_value
            shape = [None]
            for j, d in enumerate(dims[1:], 1):
                if not d.HasField("dim_value"):
                    raise ModelError(f"{where}: dimension {j} is symbolic "
                                     f"({d.dim_param or 'unnamed'}); only the batch dimension may be")
                shape.append(d.dim_value)
            self.graph.add_input(vi.name, shape)

    def add_outputs(self) -> None:
        for vi in self.model.graph.output:
            name = self.resolve(vi.name)
            if name in self.consts:
                raise ModelError(f"{self.path}: output '{vi.name}' is a constant")
            if name in self.nhwc:  # back to the file's NCHW
                if name == vi.name:
                    new = self.unique_tensor(f"{name}.nhwc")
                    self.rename(name, new)
                    name = new
                out = vi.name if vi.name not in self.graph.tensors else \
                    self.unique_tensor(f"{vi.name}.nchw")
                self.graph.add_node("transpose", self.unique_node(f"{vi.name}.to_nchw"),
                                    [name], [out], perm=(0, 3, 1, 2))
                self.nchw_out = True
                self.graph.add_output(out)
                continue
            if name != vi.name and name not in self.graph.inputs and vi.name not in self.graph.tensors:
                self.rename(name, vi.name)  # keep the file's output name through Identity
                name = vi.name
            self.graph.add_output(name)

    def rename(self, old: str, new: str) -> None:
        g = self.graph
        t = g.tensors.pop(old)
        t.name = new
        g.tensors[new] = t
        for n in g.nodes:
            n.inputs = [new if x == old else x for x in n.inputs]
            n.outputs = [new if x == old else x for x in n.outputs]
        self.alias = {k: (new if v == old else v) for k, v in self.alias.items()}
        if old in self.nhwc:
            self.nhwc.discard(old)
            self.nhwc.add(new)

    def unique_tensor(self, name: str) -> str:
        base, i = name, 1
        while name in self.graph.tensors or name in self.consts:
            name, i = f"{base}_{i}", i + 1
        return name

    def unique_node(self, name: str) -> str:
        used = {n.name for n in self.graph.nodes} | {n.name for n in self.model.graph.node}
        base, i = name, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        return name

    # layout

    def spatial(self, name: str, node_name: str, op: str) -> str:
        """The NHWC graph tensor for a spatial op's input (transposing an NCHW one)."""
        x = self.fmap(name, node_name, op)
        if x in self.nhwc:
            return x
        shape = self.graph.tensors[x].shape
        if len(shape) != 4:
            raise self.error(node_name, op, f"input '{x}' must be 4-D NCHW, not "
                             f"{_fmt(shape)}")
        if x not in self.to_nhwc:
            out = self.unique_tensor(f"{x}.nhwc")
            self.graph.add_node("transpose", self.unique_node(f"{x}.to_nhwc"), [x], [out],
                                perm=(0, 2, 3, 1))
            self.nhwc.add(out)
            self.to_nhwc[x] = out
        return self.to_nhwc[x]

    def same_layout(self, x: str, out: str) -> None:
        if x in self.nhwc:
            self.nhwc.add(out)

    # ops (one method each; a return value is the index of a node absorbed into this one)

    def op_constant(self, node, name, i):
        a = _attrs(node)
        if "value" not in a:
            raise self.error(name, "Constant", f"only the 'value' attribute is supported, "
                             f"not {sorted(a)}")
        self.consts[node.output[0]] = numpy_helper.to_array(a["value"])

    def op_identity(self, node, name, i):
        self.alias[node.output[0]] = self.resolve(node.input[0])

    def op_dropout(self, node, name, i):
        if len(node.output) > 1 and node.output[1] and (
                node.output[1] in self.readers or node.output[1] in self.onnx_outputs):
            raise self.error(name, "Dropout", "its mask output is used; only pass-through "
                             "(inference) Dropout is supported")
        self.alias[node.output[0]] = self.resolve(node.input[0])

    def op_relu(self, node, name, i):
        x = self.fmap(node.input[0], name, "Relu")
        self.graph.add_node("relu", name, [x], [node.output[0]])
        self.same_layout(x, node.output[0])

    def op_clip(self, node, name, i):
        x = self.fmap(node.input[0], name, "Clip")
        a = _attrs(node)
        lo, hi = float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        for pos, role in ((1, "min"), (2, "max")):
            if len(node.input) > pos and node.input[pos]:
                v = self.const(node.input[pos], name, "Clip", role)
                if v.size != 1:
                    raise self.error(name, "Clip", f"{role} must be a scalar, not {list(v.shape)}")
                if role == "min":
                    lo = float(v.reshape(()))
                else:
                    hi = float(v.reshape(()))
        if lo > hi:
            raise self.error(name, "Clip", f"min {lo} exceeds max {hi}")
        self.graph.add_node("clip", name, [x], [node.output[0]], min=lo, max=hi)
        self.same_layout(x, node.output[0])

    def flatten(self, x: str, node, name: str, op: str) -> None:
        """``flatten`` of graph tensor ``x`` to ``node.output[0]`` with ONNX (C, H, W) order."""
        out = node.output[0]
        shape = self.graph.tensors[x].shape
        if x in self.nhwc and shape[1] * shape[2] > 1:
            readers = self.final_readers(out)
            if readers and all(n.op_type in ("Gemm", "MatMul") and n.input[0] == t
                               and t not in n.input[1:] for n, t in readers):
                self.flat_hwc[out] = (shape[3], shape[1], shape[2])  # fc rows get permuted
            else:
                nchw = self.unique_tensor(f"{x}.nchw")
                self.graph.add_node("transpose", self.unique_node(f"{name}.to_nchw"), [x],
                                    [nchw], perm=(0, 3, 1, 2))
                x = nchw
        self.graph.add_node("flatten", name, [x], [out])

    def final_readers(self, onnx_name: str):
        """``(node, tensor)`` reading ``onnx_name`` through Identity / Dropout, or
        ``None`` if it (or an alias) is a graph output."""
        found, stack = [], [onnx_name]
        while stack:
            t = stack.pop()
            if t in self.onnx_outputs:
                return None
            for j in self.readers.get(t, []):
                n = self.model.graph.node[j]
                if n.op_type in ("Identity", "Dropout"):
                    stack.append(n.output[0])
                else:
                    found.append((n, t))
        return found

    def fc_rows(self, x: str, w: np.ndarray) -> np.ndarray:
        """``w`` [K, N] with rows in the order of graph tensor ``x``'s flattening."""
        if x not in self.flat_hwc:
            return w
        c, h, wd = self.flat_hwc[x]
        return np.ascontiguousarray(
            w.reshape(c, h, wd, w.shape[1]).transpose(1, 2, 0, 3).reshape(w.shape))

    def op_flatten(self, node, name, i):
        x = self.fmap(node.input[0], name, "Flatten")
        axis = _attrs(node).get("axis", 1)
        rank = len(self.graph.tensors[x].shape)
        if axis < 0:
            axis += rank
        if axis != 1:
            raise self.error(name, "Flatten", f"axis must be 1 (keep the batch dimension), "
                             f"not {_attrs(node).get('axis')}")
        self.flatten(x, node, name, "Flatten")

    def op_reshape(self, node, name, i):
        x = self.fmap(node.input[0], name, "Reshape")
        target = [int(v) for v in self.const(node.input[1], name, "Reshape", "shape").reshape(-1)]
        in_shape = self.graph.tensors[x].shape
        features = int(np.prod(in_shape[1:], dtype=np.int64))
        batch_ok = (0, -1) if self.batch is None else (0, -1, self.batch)
        ok = (len(target) == 2 and target[0] in batch_ok and target[1] in (-1, features)
              and target != [-1, -1])
        if not ok:
            shown = "[" + ", ".join("N" if d is None else str(d) for d in in_shape) + "]"
            raise self.error(name, "Reshape", f"only flattening to [batch, -1] is supported, "
                             f"not shape {target} for input {shown}")
        self.flatten(x, node, name, "Reshape")

    def op_gemm(self, node, name, i):
        a = _attrs(node)
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if a.get("transA", 0):
            raise self.error(name, "Gemm", "transA=1 is not supported (the activation "
                             "must be [M, K])")
        x = self.fmap(node.input[0], name, "Gemm")
        b = self.const(node.input[1], name, "Gemm", "B").astype(np.float32)
        if b.ndim != 2:
            raise self.error(name, "Gemm", f"B must be 2-D, not {list(b.shape)}")
        w = self.fc_rows(x, alpha * (b.T if a.get("transB", 0) else b))  # [K, N]
        inputs = [x, self.new_const(f"{name}.weight", w)]
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node.input[2], name, "Gemm", "C").astype(np.float32)
            inputs.append(self.new_const(f"{name}.bias", beta * self.bias_vector(
                c, w.shape[1], name, "Gemm", "C")))
        self.graph.add_node("fc", name, inputs, [node.output[0]], activation=None)

    def op_matmul(self, node, name, i):
        x = self.fmap(node.input[0], name, "MatMul")
        w = self.const(node.input[1], name, "MatMul", "right-hand side").astype(np.float32)
        if w.ndim != 2:
            raise self.error(name, "MatMul", f"the constant must be 2-D [K, N], "
                             f"not {list(w.shape)}")
        w = self.fc_rows(x, w)
        inputs = [x, self.new_const(f"{name}.weight", w)]
        out, absorbed = node.output[0], None
        add = self.bias_add(node)
        if add is not None:
            j, add_node, bias = add
            inputs.append(self.new_const(f"{name}.bias", self.bias_vector(
                bias, w.shape[1], name, "MatMul", "bias")))
            out, absorbed = add_node.output[0], j
        self.graph.add_node("fc", name, inputs, [out], activation=None)
        return absorbed

    def op_add(self, node, name, i):
        ins = [self.resolve(n) for n in node.input]
        if len(ins) != 2 or any(n in self.consts for n in ins):
            raise self.error(name, "Add", "Add of a constant is supported only as the bias "
                             "of a MatMul: the MatMul's only reader, adding a constant [N] "
                             "(or Add two feature maps: a residual connection)")
        if any(n in self.nhwc for n in ins):
            ins = [self.spatial(n, name, "Add") for n in ins]
        shapes = [self.graph.tensors[n].shape for n in ins]
        if shapes[0] != shapes[1]:
            raise self.error(name, "Add", f"inputs must have the same shape (no "
                             f"broadcasting), not {_fmt(shapes[0])} and {_fmt(shapes[1])}")
        self.graph.add_node("add", name, ins, [node.output[0]], activation=None)
        self.same_layout(ins[0], node.output[0])

    # spatial ops

    def window(self, node, name: str, op: str, x: str, kernel) -> dict:
        """``stride``, ``pads``, ``dilation`` of a Conv / pool, auto_pad resolved."""
        a = _attrs(node)
        if len(kernel) != 2:
            raise self.error(name, op, f"only 2-D windows are supported, not kernel {list(kernel)}")
        if "kernel_shape" in a and list(a["kernel_shape"]) != list(kernel):
            raise self.error(name, op, f"kernel_shape {list(a['kernel_shape'])} does not "
                             f"match the weight's {list(kernel)}")
        stride = tuple(int(v) for v in a.get("strides", (1, 1)))
        dil = tuple(int(v) for v in a.get("dilations", (1, 1)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        hw = self.graph.tensors[x].shape[1:3]
        if auto == "NOTSET":
            pads = tuple(int(v) for v in a.get("pads", (0, 0, 0, 0)))
            if len(pads) != 4:
                raise self.error(name, op, f"pads must have 4 values, not {list(pads)}")
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for n, k, s, d in zip(hw, kernel, stride, dil):
                total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
                lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                begin.append(lo)
                end.append(total - lo)
            pads = (begin[0], begin[1], end[0], end[1])
        else:
            raise self.error(name, op, f"auto_pad {auto} is not supported")
        return {"stride": stride, "pads": pads, "dilation": dil}

    def op_conv(self, node, name, i):
        a = _attrs(node)
        x = self.spatial(node.input[0], name, "Conv")
        w = self.const(node.input[1], name, "Conv", "weight").astype(np.float32)
        if w.ndim != 4:
            raise self.error(name, "Conv", f"only 2-D convolution is supported (weight "
                             f"[Cout, Cin/group, Fh, Fw]), not weight {list(w.shape)}")
        win = self.window(node, name, "Conv", x, w.shape[2:])
        groups = int(a.get("group", 1))
        cin = self.graph.tensors[x].shape[3]
        if groups < 1 or cin != w.shape[1] * groups or w.shape[0] % groups:
            raise self.error(name, "Conv", f"group={groups} does not fit input channels "
                             f"{cin} and weight {list(w.shape)}")
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = self.const(node.input[2], name, "Conv", "bias").astype(np.float32).reshape(-1)
            if b.shape != (w.shape[0],):
                raise self.error(name, "Conv", f"bias must be [{w.shape[0]}], not {list(b.shape)}")
        out, absorbed = node.output[0], None
        bn = self.sole_reader(node.output[0], "BatchNormalization")
        if bn is not None:
            absorbed, bn_node = bn
            w, b = self.fold_bn(bn_node, w, b)
            out = bn_node.output[0]
        inputs = [x, self.new_const(f"{name}.weight", w.transpose(0, 2, 3, 1))]
        if b is not None:
            inputs.append(self.new_const(f"{name}.bias", b))
        self.graph.add_node("conv", name, inputs, [out], stride=win["stride"],
                            pads=win["pads"], groups=groups, dilation=win["dilation"],
                            activation=None)
        self.nhwc.add(out)
        return absorbed

    def sole_reader(self, out: str, op_type: str):
        """``(index, node)`` of the ``op_type`` node that alone reads ``out``, if any."""
        readers = self.readers.get(out, [])
        if len(readers) != 1 or out in self.onnx_outputs:
            return None
        j = readers[0]
        n = self.model.graph.node[j]
        if n.op_type != op_type or n.domain not in ("", "ai.onnx") or n.input[0] != out:
            return None
        return j, n

    def fold_bn(self, bn, w: np.ndarray, b):
        """Conv weight and bias with BatchNormalization ``bn`` folded in (float64 math)."""
        name = bn.name or "BatchNormalization"
        a = _attrs(bn)
        if a.get("training_mode", 0):
            raise self.error(name, "BatchNormalization", "training_mode=1 is not supported")
        if any(o and (o in self.readers or o in self.onnx_outputs) for o in bn.output[1:]):
            raise self.error(name, "BatchNormalization", "its running-statistics outputs "
                             "are used; only inference BatchNormalization is supported")
        cout = w.shape[0]
        gamma, beta, mean, var = (
            self.const(t, name, "BatchNormalization", role).astype(np.float64).reshape(-1)
            for t, role in zip(bn.input[1:5], ("scale", "B", "mean", "var")))
        for v, role in ((gamma, "scale"), (beta, "B"), (mean, "mean"), (var, "var")):
            if v.shape != (cout,):
                raise self.error(name, "BatchNormalization", f"{role} must be [{cout}], "
                                 f"not {list(v.shape)}")
        k = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        w2 = (w.astype(np.float64) * k[:, None, None, None]).astype(np.float32)
        b0 = np.zeros(cout) if b is None else b.astype(np.float64)
        return w2, ((b0 - mean) * k + beta).astype(np.float32)

    def op_batchnormalization(self, node, name, i):
        raise self.error(name, "BatchNormalization", "supported only directly after a Conv "
                         "whose output it alone reads (it is folded into the Conv)")

    def pool(self, node, name, op: str, kind: str):
        a = _attrs(node)
        x = self.spatial(node.input[0], name, op)
        if "kernel_shape" not in a:
            raise self.error(name, op, "kernel_shape is required")
        kernel = tuple(int(v) for v in a["kernel_shape"])
        win = self.window(node, name, op, x, kernel)
        if win["dilation"] != (1, 1):
            raise self.error(name, op, f"dilations {list(win['dilation'])} are not supported")
        if a.get("storage_order", 0):
            raise self.error(name, op, "storage_order=1 is not supported")
        if len(node.output) > 1 and node.output[1] and (
                node.output[1] in self.readers or node.output[1] in self.onnx_outputs):
            raise self.error(name, op, "its Indices output is not supported")
        extra = {"ceil_mode": bool(a.get("ceil_mode", 0))}
        if kind == "avgpool":
            extra["count_include_pad"] = bool(a.get("count_include_pad", 0))
        self.graph.add_node(kind, name, [x], [node.output[0]], kernel=kernel,
                            stride=win["stride"], pads=win["pads"], **extra)
        self.nhwc.add(node.output[0])

    def op_maxpool(self, node, name, i):
        self.pool(node, name, "MaxPool", "maxpool")

    def op_averagepool(self, node, name, i):
        self.pool(node, name, "AveragePool", "avgpool")

    def op_globalaveragepool(self, node, name, i):
        x = self.spatial(node.input[0], name, "GlobalAveragePool")
        self.graph.add_node("gap", name, [x], [node.output[0]])
        self.nhwc.add(node.output[0])

    # helpers for fc

    def bias_add(self, matmul: onnx.NodeProto):
        """``(index, node, constant)`` of the Add that biases ``matmul``, if fusable."""
        out = matmul.output[0]
        readers = self.readers.get(out, [])
        if len(readers) != 1 or out in self.onnx_outputs:
            return None
        j = readers[0]
        add = self.model.graph.node[j]
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            return None
        other = add.input[1] if add.input[0] == out else add.input[0]
        other = self.resolve(other)
        if other not in self.consts:
            return None
        return j, add, self.consts[other].astype(np.float32)

    def bias_vector(self, c: np.ndarray, n: int, name: str, op: str, role: str) -> np.ndarray:
        if c.size == 1:
            return np.full(n, c.reshape(()), dtype=np.float32)
        if c.shape in ((n,), (1, n)):
            return c.reshape(n)
        raise self.error(name, op, f"{role} must broadcast as a bias [{n}], "
                         f"not {list(c.shape)}")


def _fmt(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
