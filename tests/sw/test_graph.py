"""Graph construction, validation, bookkeeping (seed 000 formulas), passes and the float reference."""

import numpy as np
import pytest

from celosia.errors import CelosiaError, InputError, ModelError
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
    """Plain loops over the layers' constants, independent of the float reference."""
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
    g.nodes[0].op = "lstm"
    with pytest.raises(ModelError, match="node 'fc0' has op 'lstm'"):
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


# --- CNN ops (NHWC, OHWI weights) --------------------------------------------------------

def naive_conv(x, w, b, stride, pads, groups, dil):
    """Direct loops over NHWC input and [Cout, Fh, Fw, Cin/groups] weights."""
    n, h, wd, c = x.shape
    cout, fh, fw, cg = w.shape
    pt, pl, pb, pr = pads
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, c))
    xp[:, pt:pt + h, pl:pl + wd] = x
    ho = (h + pt + pb - dil[0] * (fh - 1) - 1) // stride[0] + 1
    wo = (wd + pl + pr - dil[1] * (fw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, ho, wo, cout))
    og = cout // groups
    for o in range(cout):
        g = o // og
        for i in range(ho):
            for j in range(wo):
                for u in range(fh):
                    for v in range(fw):
                        pix = xp[:, i * stride[0] + u * dil[0], j * stride[1] + v * dil[1],
                                 g * cg:(g + 1) * cg]
                        y[:, i, j, o] += pix @ w[o, u, v].astype(np.float64)
        y[..., o] += b[o]
    return y


@pytest.mark.parametrize("stride,pads,groups,dil", [
    ((1, 1), (1, 1, 1, 1), 1, (1, 1)), ((2, 1), (0, 1, 2, 0), 2, (1, 1)),
    ((1, 2), (2, 2, 2, 2), 4, (2, 1)), ((2, 2), (1, 1, 1, 1), 1, (1, 1))])
def test_conv_against_loops(stride, pads, groups, dil):
    rng = np.random.default_rng(3)
    g = Graph("c")
    g.add_input("x", (None, 7, 6, 4))
    w = rng.standard_normal((8, 3, 3, 4 // groups)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    g.add_const("w", w)
    g.add_const("b", b)
    g.add_node("conv", "conv", ["x", "w", "b"], ["y"], stride=stride, pads=pads, groups=groups,
               dilation=dil)
    g.add_output("y")
    g.validate()
    x = rng.standard_normal((2, 7, 6, 4)).astype(np.float32)
    ref = naive_conv(x, w, b, stride, pads, groups, dil)
    got = run_float(g, x)
    assert got.shape == ref.shape == (2,) + g.tensors["y"].shape[1:]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    _, ho, wo, _ = ref.shape
    assert g.node_macs("conv", batch=2) == 2 * ho * wo * 8 * 3 * 3 * (4 // groups)
    assert g.param_bytes("conv") == w.size + 4 * 8


def test_pools_gap_add_clip():
    rng = np.random.default_rng(4)
    g = Graph("p")
    g.add_input("x", (None, 5, 5, 2))
    g.add_node("maxpool", "mp", ["x"], ["m"], kernel=(2, 2), stride=(2, 2), pads=(0, 0, 1, 1))
    g.add_node("avgpool", "ap", ["x"], ["a"], kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1),
               count_include_pad=False)
    g.add_node("add", "add", ["m", "a"], ["s"], activation="relu6")
    g.add_node("clip", "clip", ["s"], ["c"], min=0.1, max=0.5)
    g.add_node("gap", "gap", ["c"], ["y"])
    g.add_output("y")
    g.validate()
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    v = execute_float(g, {"x": x})
    xp = np.full((1, 6, 6, 2), -np.inf)
    xp[:, :5, :5] = x
    np.testing.assert_allclose(v["m"], xp.reshape(1, 3, 2, 3, 2, 2).max(axis=(2, 4)))
    a00 = x[0, :2, :2].mean(axis=(0, 1))  # corner window: 4 real pixels of 9
    np.testing.assert_allclose(v["a"][0, 0, 0], a00, rtol=1e-6)
    np.testing.assert_allclose(v["s"], np.clip(v["m"] + v["a"], 0, 6), rtol=1e-6)
    np.testing.assert_allclose(v["y"], np.clip(v["s"], 0.1, 0.5).mean(axis=(1, 2), keepdims=True),
                               rtol=1e-6)
    assert g.tensors["y"].shape == (None, 1, 1, 2)
    assert all(g.node_macs(n) == 0 for n in g.nodes)


def test_cnn_op_errors():
    g = Graph()
    g.add_input("x", (None, 5, 5, 4))
    g.add_const("w", np.zeros((6, 3, 3, 3), np.float32))
    with pytest.raises(ModelError, match=r"conv node 'c': input 'x' has 4 channels.*groups=1"):
        g.add_node("conv", "c", ["x", "w"], ["y"])
    g.add_const("w7", np.zeros((6, 7, 7, 4), np.float32))
    with pytest.raises(ModelError, match=r"conv node 'c7': a 7x7 window does not fit"):
        g.add_node("conv", "c7", ["x", "w7"], ["y"])
    g.add_const("w2", np.zeros((6, 1, 1, 2), np.float32))
    with pytest.raises(ModelError, match="activation must be one of"):
        g.add_node("conv", "c2", ["x", "w2"], ["y"], groups=2, activation="tanh")
    g.add_input("z", (None, 4, 5, 4))
    with pytest.raises(ModelError, match=r"add node 'a': inputs 'x' \[N, 5, 5, 4\] and 'z'"):
        g.add_node("add", "a", ["x", "z"], ["s"])
    with pytest.raises(ModelError, match="perm"):
        g.add_node("transpose", "t", ["x"], ["t"], perm=(1, 0, 2, 3))
    # 5 wide, window 2, stride 2: floor 2 windows, ceil 3 (the last one half outside).
    with pytest.raises(ModelError, match=r"avgpool node 'ap': ceil_mode=1 adds windows .*3x3 outputs, not 2x2"):
        g.add_node("avgpool", "ap", ["x"], ["p"], kernel=(2, 2), stride=(2, 2), ceil_mode=True)
    g.add_node("avgpool", "ap1", ["x"], ["p1"], kernel=(2, 2), ceil_mode=True)  # stride 1: no overhang
    assert g.tensors["p1"].shape == (None, 4, 4, 4)
    g.add_node("maxpool", "mp", ["x"], ["m"], kernel=(2, 2), stride=(2, 2), ceil_mode=True)
    assert g.tensors["m"].shape == (None, 3, 3, 4)


def test_fuse_activations_conv_add_clip():
    rng = np.random.default_rng(5)
    g = Graph()
    g.add_input("x", (None, 4, 4, 3))
    g.add_const("w", rng.standard_normal((3, 1, 1, 3)).astype(np.float32))
    g.add_node("conv", "conv", ["x", "w"], ["c"])
    g.add_node("clip", "r6", ["c"], ["c6"], min=0.0, max=6.0)
    g.add_node("add", "add", ["c6", "x"], ["s"])
    g.add_node("clip", "cl", ["s"], ["y"], min=-1.0, max=1.0)
    g.add_output("y")
    f = fuse_activations(g)
    assert [n.op for n in f.nodes] == ["conv", "add"]
    assert f.node("conv").attrs["activation"] == "relu6"
    assert f.node("add").attrs["activation"] == ("clip", -1.0, 1.0)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32) * 4
    np.testing.assert_allclose(run_float(f, x), run_float(g, x), rtol=1e-6)


def test_lazy_constants():
    from celosia.sw.graph import LazyInit
    g = Graph()
    g.add_input("x", (None, 3))
    w = g.add_const("w", shape=(3, 2), init=LazyInit(7, 0.5))
    assert w.is_const and w.is_lazy and w.data is None
    g.add_node("fc", "fc", ["x", "w"], ["y"])
    g.add_output("y")
    g.validate()
    assert g.param_bytes("fc") == 6 and g.num_params() == 6
    np.testing.assert_array_equal(g.const("w"), LazyInit(7, 0.5).generate((3, 2)))
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(run_float(g, x), x @ g.const("w"), rtol=1e-6)
    assert "w" not in execute_float(g, {"x": x})   # generated on demand, not kept
    with pytest.raises(ModelError, match="needs data, or a fixed shape and an init"):
        g.add_const("v", shape=(3,))


def test_every_op_has_a_float_kernel():
    from celosia.sw.graph import OPS
    from celosia.sw.graph.reference import KERNELS

    assert list(KERNELS) == list(OPS)


def test_float_conv_is_the_golden_models():
    """The graph's conv kernel and golden.conv2d_float are one implementation: with a 1x1
    kernel and integer-valued float32 data every sum is exact, so they agree exactly with a
    hand-written matrix product."""
    from celosia.sim.golden import conv2d_float

    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (2, 3, 4, 6)).astype(np.float32)
    w = rng.integers(-3, 4, (5, 1, 1, 6)).astype(np.float32)
    g = Graph("c1")
    g.add_input("x", (None, 3, 4, 6))
    g.add_const("w", w)
    g.add_node("conv", "conv", ["x", "w"], ["y"])
    g.add_output("y")
    want = x.reshape(-1, 6) @ w[:, 0, 0, :].T           # [N*H*W, Cout]
    np.testing.assert_array_equal(run_float(g, x).reshape(-1, 5), want)
    np.testing.assert_array_equal(conv2d_float(x, w).reshape(-1, 5), want)
