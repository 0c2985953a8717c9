"""The compiler's fast paths each equal the plain path they replace: the generated packers
(rtl/isa.py ``packer``) and the instruction encoders built on them (sw/compiler/tiling.py)
against ``isa.pack``'s field-by-field loop and ``isa.encode``; ``merge_loads`` against the
plain run-by-run merge it replaced; the per-op weight key / rows against their formulas;
``lower_conv``'s objects shared between blocks against unshared copies; the garbage
collector's pause; and a program reused for a config that differs only in fields the
compiler does not read (``Program.with_config``, the sweep's ``programs_for``) against
compiling for that config."""

from __future__ import annotations

import copy
import dataclasses
import gc
import warnings

import numpy as np
import pytest

from celosia.errors import EncodeError, FieldError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Buffer, Opcode
from celosia.sw.compiler import RUN_ONLY_FIELDS, GemmOp, Window, compile_model, program_key
from celosia.sw.compiler.alloc import weight_key, weight_tile_rows
from celosia.sw.compiler.compile import gc_paused
from celosia.sw.compiler.emit import emit_unit
from celosia.sw.compiler.tiling import Load, Store, dep_bits, dep_flags, load, merge_loads

LAYOUTS = [isa.LoadInsn, isa.GemmInsn, isa.StoreInsn, isa.VecInsn, isa.Header, isa.NodeDescriptor,
           isa.ParamRecord, isa.Status]


def _range(layout, name):
    """``(lo, hi)`` of a plain field, from the layout's shape (independent of isa's tables)."""
    f = dict(layout)[name]
    shape = f.shape
    if getattr(shape, "signed", False):
        return -(1 << (f.width - 1)), (1 << (f.width - 1)) - 1
    return 0, (1 << f.width) - 1


def _random_fields(rng, layout):
    out = {}
    for name, f in layout:
        if name.startswith("_") or rng.random() < 0.2:   # some fields left out (0)
            continue
        if name == "op":
            out[name] = Opcode(int(rng.choice([o.value for o in Opcode])))
        elif name == "dep":
            out[name] = {k: int(rng.integers(2)) for k, _ in isa.DepFlags}
        elif name == "buf":
            out[name] = Buffer(int(rng.integers(3)))
        elif name == "mode":
            out[name] = isa.VecMode(int(rng.integers(3)))
        else:
            lo, hi = _range(layout, name)
            pick = rng.integers(4)
            out[name] = lo if pick == 0 else hi if pick == 1 else int(rng.integers(lo, hi + 1))
    return out


def _by_hand(layout, fields):
    """The packed value from amaranth's own field offsets: each value's two's complement
    bits at its offset (enums by value, nested structs from their flags)."""
    word = 0
    for name, value in fields.items():
        f = dict(layout)[name]
        if isinstance(value, dict):
            value = sum(v << dict(f.shape)[k].offset for k, v in value.items())
        elif hasattr(value, "value"):
            value = value.value
        word |= (value & ((1 << f.width) - 1)) << f.offset
    return word


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: str(l.size))
def test_packer_equals_pack_field_by_field(layout):
    rng = np.random.default_rng(layout.size)
    for _ in range(300):
        fields = _random_fields(rng, layout)
        expected = _by_hand(layout, fields)
        assert isa._pack_loop(layout, fields) == expected
        assert isa.packer(layout)(**fields) == expected
        assert isa.pack(layout, **fields) == expected
        names = tuple(fields)
        assert isa.packer(layout, names)(*fields.values()) == expected
        if "dep" in fields:   # a nested struct as its packed int
            fields["dep"] = isa.pack(isa.DepFlags, **fields["dep"])
            assert isa.packer(layout, names)(*fields.values()) == expected


@pytest.mark.parametrize("layout", [isa.LoadInsn, isa.GemmInsn, isa.StoreInsn, isa.VecInsn])
def test_packer_rejects_what_pack_rejects(layout):
    for name, f in layout:
        if name.startswith("_") or name in ("op", "dep", "buf", "mode"):
            continue
        lo, hi = _range(layout, name)
        for bad in (lo - 1, hi + 1):
            with pytest.raises(FieldError, match=rf"\b{name}\b"):
                isa.packer(layout, (name,))(bad)
            with pytest.raises(FieldError, match=rf"\b{name}\b"):
                isa.packer(layout)(**{name: bad})
    with pytest.raises(FieldError, match="unknown field 'bogus'"):
        isa.packer(layout, ("bogus",))
    with pytest.raises(FieldError, match="unknown field 'bogus'"):
        isa.pack(layout, bogus=1)
    with pytest.raises(FieldError, match="dep"):
        isa.packer(layout, ("dep",))(16)   # DepFlags is 4 bits


def test_dep_bits_equal_dep_flags():
    for bits in range(16):
        flags = dict(zip(("pop_prev", "pop_next", "push_prev", "push_next"), (bool(bits >> i & 1) for i in range(4))))
        assert dep_bits(**flags) == isa.pack(isa.DepFlags, **dep_flags(**flags))


def _random_load(rng):
    kw = {name: int(rng.integers(lo, hi + 1)) for name, (lo, hi) in {
        "dram_offset": (-(1 << 31), (1 << 31) - 1), "n0": (1, 1023), "dram_stride0": (0, 255),
        "lane0": (0, 1023), "n1": (1, 65535), "dram_stride1": (0, (1 << 20) - 1), "buf_stride1": (0, 65535),
        "n2": (1, 65535), "dram_stride2": (0, (1 << 20) - 1), "buf_stride2": (0, 65535), "buf_row": (0, 30000),
        "pad_en": (0, 1), "pad_lo1": (0, 4095), "pad_hi1": (0, 4095), "pad_lo2": (0, 4095),
        "pad_hi2": (0, 4095), "pad_value": (-128, 127)}.items() if rng.random() < 0.8}
    return Load(base_reg=int(rng.integers(8)), **{"n0": 1, "dram_offset": 0, **kw})


def test_encoders_equal_isa_encode():
    """Load / Store / GemmOp ``encode`` (positional packers) == ``isa.encode`` of the fields
    the plain encoders passed (every field of the object, the row moved, the run applied)."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        dep = {k: int(rng.integers(2)) for k, _ in isa.DepFlags}
        ld, base = _random_load(rng), int(rng.integers(0, 30000))
        buf = Buffer(int(rng.integers(3)))
        assert ld.encode(buf, base, dep) == isa.encode(Opcode.LOAD, buf=buf, dep=dep, **{
            **ld.__dict__, "buf_row": base + ld.buf_row})
        assert ld.encode(buf, base, isa.pack(isa.DepFlags, **dep)) == ld.encode(buf, base, dep)

        st = Store(base_reg=int(rng.integers(8)), dram_offset=int(rng.integers(-1000, 1 << 20)),
                   dram_stride=int(rng.integers(1 << 16)), n_len=int(rng.integers(256)),
                   out_zp=int(rng.integers(-128, 128)), act_min=-128, act_max=int(rng.integers(128)),
                   to_buf=int(rng.integers(2)), single_round=int(rng.integers(2)),
                   buf_row=int(rng.integers(1000)), buf_stride=int(rng.integers(100)),
                   lane0=int(rng.integers(256)), runs=3, run_stride=int(rng.integers(50)))
        run = int(rng.integers(3))
        fields = {k: v for k, v in st.__dict__.items() if not k.startswith("run")}
        fields["buf_row" if st.to_buf else "dram_offset"] += run * st.run_stride
        assert st.encode(psum_row=7, param_row=9, m_len=11, dep=dep, run=run) == isa.encode(
            Opcode.STORE, psum_row=7, param_row=9, m_len=11, dep=dep, **fields)

        win = Window(*(int(x) for x in rng.integers(1, 256, size=8)), row_pitch=int(rng.integers(65536)))
        for window in (None, win):
            op = GemmOp(k_len=int(rng.integers(256)), n_len=int(rng.integers(256)), weight=[], window=window)
            var = dict(accumulate=int(rng.integers(2)), ifmap_row=int(rng.integers(65536)),
                       weight_row=int(rng.integers(65536)), psum_row=int(rng.integers(65536)),
                       m_len=int(rng.integers(65536)), dep=dep, in_zp=int(rng.integers(-128, 128)))
            extra = dict(window=1, **window.__dict__) if window else {}
            assert op.encode(**var) == isa.encode(Opcode.GEMM, k_len=op.k_len, n_len=op.n_len, **var, **extra)
    with pytest.raises(EncodeError, match="n0"):
        Load(base_reg=0, dram_offset=0, n0=1024).encode(Buffer.IFMAP, 0, 0)
    with pytest.raises(EncodeError, match="ifmap_row"):
        GemmOp(k_len=1, n_len=1, weight=[]).encode(accumulate=0, ifmap_row=1 << 16, weight_row=0,
                                                   psum_row=0, m_len=1, dep=0, in_zp=0)


def _merge_plain(loads):
    """The run-by-run merge ``merge_loads`` replaced (its specification, unchanged)."""
    fits = {f: isa.field_max(isa.LoadInsn, f) for f in ("n2", "dram_stride2", "buf_stride2")}

    def shape(ld):
        d = dict(ld.__dict__)
        del d["dram_offset"], d["buf_row"]
        return d

    out, run = [], []

    def flush():
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(dataclasses.replace(run[0], n2=len(run),
                                           dram_stride2=run[1].dram_offset - run[0].dram_offset,
                                           buf_stride2=run[1].buf_row - run[0].buf_row))
        run.clear()

    for ld in loads:
        if ld.n2 != 1 or ld.pad_en:
            flush()
            out.append(ld)
            continue
        if run:
            step = (run[1].dram_offset - run[0].dram_offset, run[1].buf_row - run[0].buf_row) \
                if len(run) > 1 else (ld.dram_offset - run[0].dram_offset, ld.buf_row - run[0].buf_row)
            ok = (0 < step[0] <= fits["dram_stride2"] and 0 < step[1] <= fits["buf_stride2"]
                  and len(run) < fits["n2"] and ld.dram_offset == run[0].dram_offset + len(run) * step[0]
                  and ld.buf_row == run[0].buf_row + len(run) * step[1] and shape(ld) == shape(run[0]))
            if not ok:
                flush()
        run.append(ld)
    flush()
    return out


def test_merge_loads_equals_the_plain_merge():
    rng = np.random.default_rng(2)
    big = isa.field_max(isa.LoadInsn, "dram_stride2")
    for _ in range(400):
        loads, off, row = [], int(rng.integers(1000)), int(rng.integers(100))
        ds, db = int(rng.choice([1, 8, 64, big, big + 1, 0, -8])), int(rng.choice([1, 8, 0, 3]))
        for _ in range(int(rng.integers(0, 12))):
            r = rng.random()
            if r < 0.1:    # a break in the progression
                off += int(rng.integers(1, 50))
            elif r < 0.15:
                row += 1
            n1 = 8 if rng.random() < 0.9 else 4                         # another shape
            n2 = 1 if rng.random() < 0.9 else 2
            pad = int(rng.random() < 0.05)
            loads.append(load(BaseReg.STATIC, off, 8, n1=n1, s1=16, bs1=1, n2=n2, buf_row=row, pad_en=pad))
            off, row = off + ds, row + db
        assert [ld.__dict__ for ld in merge_loads(loads)] == [ld.__dict__ for ld in _merge_plain(loads)]
    run = [load(BaseReg.STATIC, 64 * i, 8, buf_row=i) for i in range(isa.field_max(isa.LoadInsn, "n2") + 3)]
    assert [ld.n2 for ld in merge_loads(run)] == [ld.n2 for ld in _merge_plain(run)] == [65535, 3]


def test_weight_key_and_rows_are_their_formulas():
    weight = [load(BaseReg.STATIC, 100, 8, n1=5, s1=16, bs1=1), load(BaseReg.STATIC, 900, 8, n1=3, s1=16,
                                                                     bs1=1, buf_row=5)]
    op = GemmOp(k_len=8, n_len=8, weight=weight, window=Window(1, 3, 1, 1, 1, 1, 2, 2))
    for _ in range(2):   # computed, then kept
        assert weight_key(op) == tuple(tuple(dataclasses.astuple(ld)) for ld in weight)
        assert weight_tile_rows(op) == 24   # written rows 0..7 < the GEMM's k_len * win_w = 24
    assert op == GemmOp(k_len=8, n_len=8, weight=weight, window=Window(1, 3, 1, 1, 1, 1, 2, 2))


def test_rs_load_cycles_memo_equals_load_cycles():
    from celosia.rtl.dma import load_cycles
    from celosia.sw.compiler.lower_rs import _loads_cycles
    rng = np.random.default_rng(3)
    for bus in (64, 128, 256):
        config = AccelConfig(rows=4, cols=4, dataflow="rs", bus_bits=bus, dram_latency=int(rng.integers(1, 64)))
        loads = [load(BaseReg.SCRATCH, int(rng.integers(-1000, 1000)), int(rng.integers(1, 40)),
                      n1=int(rng.integers(1, 9)),
                      s1=int(rng.integers(1, 99)), bs1=1, n2=int(rng.integers(1, 4)), s2=500, bs2=9,
                      pad_en=int(rng.integers(2)), pad_lo1=1, pad_hi1=3, pad_lo2=0, pad_hi2=2)
                 for _ in range(30)]
        for _ in range(2):   # computed, then remembered
            assert _loads_cycles(loads, config) == sum(load_cycles(ld.__dict__, config) for ld in loads)
        for ld in loads[:5]:   # the same shape at other addresses: remembered by the place in a bus word
            for shift in range(-config.bus_bytes - 1, config.bus_bytes + 2):
                moved = dataclasses.replace(ld, dram_offset=ld.dram_offset + shift)
                assert _loads_cycles([moved], config) == load_cycles(moved.__dict__, config)


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with gc_paused():
            raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()   # left as the caller had it
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def tiny():
    from celosia.sw.quant import CalibrationWarning, quantize_graph
    from celosia.sw.zoo import tiny_cnn
    graph = tiny_cnn()
    x = np.random.default_rng(0).random((4, *graph.tensors[graph.inputs[0]].shape[1:]), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return quantize_graph(graph, x)


def _same(a, b):
    assert a.image() == b.image() and a.static == b.static
    assert [(n.name, n.insns, n.tiles) for n in a.nodes] == [(n.name, n.insns, n.tiles) for n in b.nodes]
    assert (a.resident, a.kept, a.layout(2)) == (b.resident, b.kept, b.layout(2))


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
def test_lower_conv_shared_objects_emit_as_unshared_copies(tiny, dataflow):
    """The GEMMs, weight LOADs and windows ``lower_conv`` shares between blocks emit the
    same words as deep copies (nothing keyed by an object's identity leaks)."""
    from celosia.sw.compiler import lower_gemm, lower_rs
    from celosia.sw.compiler.alloc import allocate, streaming_plan
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, ifmap_rows=256, psum_rows=64)
    family = lower_rs if dataflow == "rs" else lower_gemm
    _, allocs, _ = allocate(tiny, config, 1)
    checked = 0
    for layer, alloc in zip(tiny.layers, allocs):
        if layer.op != "conv":
            continue
        units = family.lower_conv(layer, config, 1, alloc)
        for unit in units:   # each op copied on its own: no object shared between two ops
            plain = dataclasses.replace(unit, tiles=[dataclasses.replace(
                t, ops=[copy.deepcopy(op) for op in t.ops]) for t in unit.tiles])
            for p in (None, streaming_plan(config)):
                assert emit_unit(unit, config, True, False, p, {}) == emit_unit(plain, config, True, False, p)
            checked += 1
    assert checked


@pytest.mark.parametrize("resident", [True, False])
def test_image_equals_its_words_and_size(tiny, resident):
    """``Program.image`` (whole instructions to bytes) == the plain word-by-word image, and
    ``image_bytes`` (what ``layout`` reads) == its length."""
    program = compile_model(tiny, AccelConfig(rows=4, cols=4), resident_weights=resident)
    assert (program.init is not None) == resident

    def words(nodes):
        return b"".join(w.to_bytes(8, "little") for nd in nodes for insn in nd.insns for w in isa.encode_words(insn))

    image = program.image()
    plain = program.descriptor_table() + words(program.nodes)
    if resident:
        assert program.init_offset == len(plain)
        plain += program._table([program.init], 1, 0) + words([program.init])
    assert image == plain and program.image_bytes == len(image)
    assert program.layout(1)["static"] == -(-len(image) // 64) * 64


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
def test_run_only_fields_change_no_program(tiny, dataflow):
    """A program reused for a config that differs in a field of ``RUN_ONLY_FIELDS`` (not
    read by the dataflow's lowering, ``TIMING_FIELDS``) equals the one compiled for it."""
    from celosia.rtl.dataflows import dataflow as registry
    base = AccelConfig(rows=4, cols=4, dataflow=dataflow, dram_bytes=1 << 20)
    program = compile_model(tiny, base)
    timing = getattr(registry(dataflow).lowering, "TIMING_FIELDS", ())
    assert set(timing) <= set(RUN_ONLY_FIELDS)
    for name, value in [("bus_bits", 128), ("dram_bytes", 1 << 21), ("dram_latency", 30),
                        ("dram_bytes_per_cycle", 2), ("ppu_lanes", 4), ("feie_read_ports", 1),
                        ("feie_write_ports", 1)]:
        assert name in RUN_ONLY_FIELDS
        config = dataclasses.replace(base, **{name: value})
        if name in timing:
            assert program_key(config) != program_key(base)
            with pytest.raises(ValueError, match=name):
                program.with_config(config)
            continue
        assert program_key(config) == program_key(base)
        reused = program.with_config(config)
        assert reused.config == config and program.config == base
        _same(reused, compile_model(tiny, config))
    with pytest.raises(ValueError, match="queue_depth"):
        program.with_config(dataclasses.replace(base, queue_depth=4))


def test_sweep_compiles_once_per_program(monkeypatch, tmp_path):
    from celosia.sw import sweep_eval
    from celosia.sw.sweep_grid import Grid, expand
    from test_sweep import TOPOLOGY   # two conv layers, each a model of its own
    topo = tmp_path / "layers.csv"
    topo.write_text(TOPOLOGY)
    grid = Grid(models=[str(topo)], dataflows=["os"], arrays=[(4, 4)], backend="perf",
                sets={"bus_bits": [64, 128], "dram_latency": [4, 9], "dram_bytes": [1 << 24]})
    points = expand(grid)
    assert len(points) == 4
    plain = []
    for p in points:   # every point compiled afresh: the plain path
        sweep_eval._PROGRAMS.clear()
        plain.append(sweep_eval.evaluate_point(p))
    compiles = []
    real = compile_model
    monkeypatch.setattr("celosia.sw.compiler.compile_model", lambda *a, **k: compiles.append(1) or real(*a, **k))
    sweep_eval._PROGRAMS.clear()
    assert [sweep_eval.evaluate_point(p) for p in points] == plain
    assert len(compiles) == 2   # one per layer model
    assert len({r["cycles"] for rows in plain for r in rows if r["layer"] == rows[0]["layer"]}) > 1


def test_sweep_compiles_each_layer_of_a_long_topology_once(monkeypatch, tmp_path):
    """A topology of more single-layer models than ``PROGRAM_CACHE`` still compiles each
    layer once over the points that share its programs (a model's programs are kept
    together, not evicted one by one)."""
    from celosia.sw import sweep_eval
    from celosia.sw.sweep_grid import Grid, expand
    layers = sweep_eval.PROGRAM_CACHE + 2
    topo = tmp_path / "layers.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                    "Num Filter, Strides,\n" + "".join(f"L{i}, 6, 6, 3, 3, 2, {i + 2}, 1,\n" for i in range(layers)))
    points = expand(Grid(models=[str(topo)], dataflows=["ws"], arrays=[(4, 4)], backend="perf",
                         sets={"bus_bits": [64, 128, 256]}))
    compiles = []
    real = compile_model
    monkeypatch.setattr("celosia.sw.compiler.compile_model", lambda *a, **k: compiles.append(1) or real(*a, **k))
    sweep_eval._PROGRAMS.clear()
    rows = [sweep_eval.evaluate_point(p) for p in points]
    assert [len(r) for r in rows] == [layers] * 3
    assert len(compiles) == layers
