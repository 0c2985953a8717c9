"""Graph construction, validation, bookkeeping (seed 000 formulas), passes and the float reference."""

import numpy as np
import pytest

from celosia.sw.errors import CelosiaError, InputError, ModelError
from celosia.sw.graph import Graph, fuse_activations, run_float, execute_float


def make_mlp(dims=(5, 3, 7), bias=True, seed=0):
    """input [N, dims[0]] -> (fc, relu) * ... -> fc, weights random."""
    rng = np.random.default_rng(seed)
    g = Graph("mlp")
    g.add_input("x", (None, dims[0]))
    x = "x"
    for i, (k, n) in enumerate(zip(dims[:-1], dims[1:])):
        ins = [x, g.add_const(f"w{i}", rng.standard_normal((k, n)).astype(np.float32)).name]
        if bias:
            ins.append(g.add_const(f"b{i}", rng.standard_normal(n).astype(np.float32)).name)
        g.add_node("fc", f"fc{i}", ins, [f"y{i}"])
        x = f"y{i}"
        if i < len(dims) - 2:
            g.add_node("relu", f"relu{i}", [x], [f"r{i}"])
            x = f"r{i}"
    g.add_output(x)
    g.validate()
    return g


def naive_mlp(g, x):
    """Plain loops over the layers' constants, independent of OpSpec.run."""
    n_fc = sum(n.op == "fc" for n in g.nodes)
    for i in range(n_fc):
        w = g.tensors[f"w{i}"].data.astype(np.float64)
        b = g.tensors[f"b{i}"].data.astype(np.float64)
        y = np.zeros((x.shape[0], w.shape[1]))
        for m in range(x.shape[0]):
            for n in range(w.shape[1]):
                y[m, n] = sum(x[m, k] * w[k, n] for k in range(w.shape[0])) + b[n]
        x = np.maximum(y, 0) if i < n_fc - 1 else y
    return x


def test_errors_hierarchy():
    assert issubclass(ModelError, CelosiaError) and issubclass(InputError, CelosiaError)
    assert issubclass(CelosiaError, Exception)


def test_shapes_inferred_with_symbolic_batch():
    g = make_mlp((5, 3, 7))
    assert g.tensors["x"].shape == (None, 5)
    assert g.tensors["y0"].shape == (None, 3)
    assert g.tensors["r0"].shape == (None, 3)
    assert g.tensors["y1"].shape == (None, 7)
    assert [n.name for n in g.nodes] == ["fc0", "relu0", "fc1"]
    assert g.producer("y0").name == "fc0" and g.producer("x") is None
    assert [n.name for n in g.consumers("y0")] == ["relu0"]


@pytest.mark.parametrize("dims", [(1, 1), (64, 64, 32, 10), (3, 5, 1, 9)])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_bookkeeping_formulas(dims, batch):
    g = make_mlp(dims)
    rows = g.summary(batch)
    fcs = [r for r in rows if r["op"] == "fc"]
    for r, k, n in zip(fcs, dims[:-1], dims[1:]):
        assert r["macs"] == batch * k * n                 # seed 000: MACs = Ni No per sample
        assert r["params"] == k * n * 1 + n * 4          # int8 weights + int32 bias
        assert r["in_bytes"] == batch * k and r["out_bytes"] == batch * n   # (Ni + No) int8
    for r in rows:
        if r["op"] == "relu":
            assert r["macs"] == 0 and r["params"] == 0
            assert r["in_bytes"] == r["out_bytes"]
    assert set(rows[0]) == {"name", "op", "macs", "params", "in_bytes", "out_bytes"}
    assert g.node_macs("fc0") == dims[0] * dims[1]
    assert g.fmap_bytes("x", batch=batch) == batch * dims[0]


def test_param_bytes_without_bias():
    g = make_mlp((6, 4), bias=False)
    assert g.param_bytes("fc0") == 6 * 4


def test_flatten():
    g = Graph()
    g.add_input("img", (None, 2, 3, 4))
    g.add_node("flatten", "flat", ["img"], ["v"])
    g.add_output("v")
    g.validate()
    assert g.tensors["v"].shape == (None, 24)
    assert g.node_macs("flat") == 0
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 2, 3, 4)
    np.testing.assert_array_equal(run_float(g, x), x.reshape(2, 24))


@pytest.mark.parametrize("batch", [1, 4])
def test_run_float_against_naive(batch):
    g = make_mlp((6, 5, 4, 3))
    x = np.random.default_rng(1).standard_normal((batch, 6)).astype(np.float32)
    np.testing.assert_allclose(run_float(g, x), naive_mlp(g, x), rtol=1e-5, atol=1e-5)
    everything = execute_float(g, {"x": x})
    assert everything["r0"].min() >= 0 and everything["y2"].shape == (batch, 3)


def test_fuse_activations():
    g = make_mlp((6, 5, 4, 3))
    f = fuse_activations(g)
    assert [(n.name, n.op, n.attrs.get("activation")) for n in f.nodes] == [
        ("fc0", "fc", "relu"), ("fc1", "fc", "relu"), ("fc2", "fc", None)]
    assert "y0" not in f.tensors and f.nodes[0].outputs == ["r0"]
    assert [n.op for n in g.nodes] == ["fc", "relu", "fc", "relu", "fc"]  # input untouched
    x = np.random.default_rng(2).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(run_float(f, x), run_float(g, x))
    # Bookkeeping of the fc nodes is unchanged by fusion.
    fc_rows = [r for r in g.summary() if r["op"] == "fc"]
    assert [(r["macs"], r["params"]) for r in f.summary()] == [(r["macs"], r["params"]) for r in fc_rows]


def test_fuse_keeps_observable_tensor():
    # The fc output is also a graph output: the relu must stay separate.
    g = make_mlp((4, 3, 2))
    g.add_output("y0")
    f = fuse_activations(g)
    assert [n.op for n in f.nodes] == ["fc", "relu", "fc"]


def test_validate_rejects_bad_graphs():
    g = make_mlp((4, 3))
    g.tensors["y0"].shape = (None, 5)
    with pytest.raises(ModelError, match=r"tensor 'y0' is recorded as \[N, 5\] but node 'fc0'"):
        g.validate()

    g = make_mlp((4, 3))
    g.nodes[0].op = "conv"
    with pytest.raises(ModelError, match="node 'fc0' has op 'conv'"):
        g.validate()

    g = Graph()
    g.add_input("x", (None, 4))
    g.add_const("w", np.zeros((5, 3), np.float32))
    with pytest.raises(ModelError, match=r"fc node 'fc': input 'x' has K=4 but weight 'w' is \[5, 3\]"):
        g.add_node("fc", "fc", ["x", "w"], ["y"])
    with pytest.raises(ModelError, match="node 'fc' reads tensor 'nope'"):
        g.add_node("fc", "fc", ["nope", "w"], ["y"])

    g2 = make_mlp((4, 3, 2))
    g2.nodes.reverse()
    with pytest.raises(ModelError, match="not defined before it"):
        g2.validate()


def test_run_float_input_errors():
    g = make_mlp((4, 3))
    with pytest.raises(InputError, match=r"input 'x' must have shape \[N, 4\], not \[2, 5\]"):
        run_float(g, np.zeros((2, 5)))
    with pytest.raises(InputError, match="input 'x' is missing"):
        execute_float(g, {})
    with pytest.raises(InputError, match="no input"):
        execute_float(g, {"x": np.zeros((1, 4)), "z": np.zeros(1)})
