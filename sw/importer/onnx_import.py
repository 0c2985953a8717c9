"""Float ONNX models -> :class:`celosia.sw.graph.Graph`.

Supported ONNX ops and what they become:

* ``Gemm`` (any ``alpha``, ``beta``, ``transB``; ``transA=0``) -> ``fc`` with
  ``weight = alpha * op(B)`` as ``[K, N]`` and ``bias = beta * C`` as ``[N]``.
* ``MatMul`` with a constant right-hand side -> ``fc``; when its only reader is
  an ``Add`` of a constant ``[N]`` (how exporters spell a linear layer), the
  pair becomes one ``fc`` with that bias.
* ``Relu`` -> ``relu`` (:func:`celosia.sw.graph.fuse_activations` folds it into
  the fc before it; a separate pass so each step can be checked alone).
* ``Flatten`` (``axis=1``) and ``Reshape`` to ``[batch, -1]`` -> ``flatten``.
* ``Identity``, ``Dropout`` (inference: pass-through) and ``Constant`` leave no node.

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

from ..errors import ModelError
from ..graph import Graph

__all__ = ["load_onnx", "SUPPORTED_OPS"]

#: ONNX op types the importer accepts (``Add`` only as a MatMul's bias).
SUPPORTED_OPS = ("Add", "Constant", "Dropout", "Flatten", "Gemm", "Identity",
                 "MatMul", "Relu", "Reshape")


def load_onnx(path: str | Path) -> Graph:
    """Read a float ONNX model into a validated :class:`Graph`.

    Raises :class:`ModelError` for a missing or unreadable file, an unsupported
    op (naming the node, the op and :data:`SUPPORTED_OPS`) or an unsupported use
    of a supported one (e.g. ``Gemm`` with ``transA=1``).
    """
    return _Importer(_read(Path(path)), str(path)).run()


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf and checker errors have no common base
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a valid ONNX model ({msg})") from None
    return model


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
                if not (d.HasField("dim_value") and d.dim_value > 0):
                    raise ModelError(f"{where}: dimension {j} is symbolic "
                                     f"({d.dim_param or '?'}); only the batch dimension may be")
                shape.append(d.dim_value)
            self.graph.add_input(vi.name, shape)

    def add_outputs(self) -> None:
        for vi in self.model.graph.output:
            name = self.resolve(vi.name)
            if name in self.consts:
                raise ModelError(f"{self.path}: output '{vi.name}' is a constant")
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
        self.graph.add_node("relu", name, [self.fmap(node.input[0], name, "Relu")],
                            [node.output[0]])

    def op_flatten(self, node, name, i):
        x = self.fmap(node.input[0], name, "Flatten")
        axis = _attrs(node).get("axis", 1)
        rank = len(self.graph.tensors[x].shape)
        if axis < 0:
            axis += rank
        if axis != 1:
            raise self.error(name, "Flatten", f"axis must be 1 (keep the batch dimension), "
                             f"not {_attrs(node).get('axis')}")
        self.graph.add_node("flatten", name, [x], [node.output[0]])

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
        self.graph.add_node("flatten", name, [x], [node.output[0]])

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
        w = alpha * (b.T if a.get("transB", 0) else b)  # [K, N]
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
        raise self.error(name, "Add", "Add is supported only as the bias of a MatMul: "
                         "the MatMul's only reader, adding a constant [N]")

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
