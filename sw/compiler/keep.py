"""Layer outputs kept on chip: a layer's STOREs write the next layer's input into the
ifmap buffer (``StoreInsn.to_buf``) instead of DRAM, and the next layer loads nothing.

A layer ``i`` keeps its output when all of these hold:

* layer ``i + 1`` reads layer ``i``'s output and nothing else, and no other layer reads
  it (no residual add, no second reader), and layer ``i`` is not the model's last;
* ``rows % cols == 0`` (an output tile of ``cols`` channels lands in one ifmap row);
* either both are fully connected and both lowered resident (each unit reads the whole
  ``[batch, K]`` input as one block in one ifmap half,
  :func:`~celosia.sw.compiler.lower_gemm.lower_fc`), any dataflow;
* or both are convolutions (not grouped) lowered by the plain-GEMM family (ws, os, feie:
  :func:`~celosia.sw.compiler.lower_gemm.lower_conv`; rs has its own lowering,
  :mod:`~celosia.sw.compiler.lower_rs`, and keeps no conv output), each resident with its
  whole output as one block (so batch 1: a conv's blocks are per image) -- so the producer
  reads one ifmap half only and the consumer's raw input rows (every channel chunk's ``ny x
  nx`` window rows, padding included) sit in the other -- and keeping saves DRAM bytes (the
  producer's extra STORE and padding LOAD instructions, 32 bytes of fetch each, cost less
  than the round trip; not so for small maps on narrow arrays).

fc -> fc: the STOREs write the block layout the next layer's LOADs would produce: channel
``c`` of sample ``b`` at ifmap row ``half_row + (c // rows) * line_pitch + b *
sample_pitch``, lane ``c % rows``, the pitches from the lowering family's
``fc_block_pitches`` (ws, os, feie: ``(batch, 1)``; rs: ``(1, ceil(K / rows))``) and
``half_row`` the first row of the ifmap half layer ``i`` does not read. An output tile of
samples ``b0 ..`` and channels ``c0 ..`` (``c0`` a multiple of ``cols``, so its channels
share one ``c // rows``) goes to ``buf_row`` = that row of ``(b0, c0)``, ``buf_stride =
sample_pitch``, ``lane0 = c0 % rows``.

conv -> conv: the consumer's block holds input pixel ``(y, x)`` of channel ``c`` at row
``half_row + (c // rows) * ny * nx + (y + pad_top) * nx + x + pad_left``, lane ``c %
rows``, for the ``rows_in x cols_in`` pixels its window reads (a strided conv without
padding may leave the last rows / columns unread). The producer's tile of channels ``c0
..`` (the whole ``H x W`` map) goes out in one STORE per map row read (``Store.runs``:
``cols_in`` psum rows from row ``r * W`` to ifmap row ``buf_row + r * nx``, skipping the
padding columns), or in one STORE when there are no padding columns and every column is
read. The padding itself (the consumer's input zero point) comes from LOADs that read
nothing (every position padding: no DRAM access nor bounds check, ``ceil(lanes / bus
bytes)`` pad requests per row, :func:`~celosia.rtl.dma.load_cycles`), one per run of
rows the STOREs do not write: before the first pixel, per chunk the gaps between pixel
rows, between one chunk's last pixel and the next one's first, after the last pixel. They
ride with the producer's first unit's block LOADs (``buf_row`` relative to that block's
half, so negative when the consumer's half is 0): the in-order LOAD queue runs them after
the unit's first LOAD, which waits (``c2l``) for the barrier before the unit (the half's
last readers are done), and the unit's first GEMM waits (``l2c``) for them, so every STORE
of the producer (each after a GEMM) comes after them.

Layer ``i + 1``'s units then take the kept half as their first ifmap half
(:attr:`~celosia.sw.compiler.tiling.Unit.half`) and lose their block LOADs. Chains
alternate halves. The barrier between units (last STORE ``s2c`` -> NOP -> ``c2l`` -> the
next unit's first LOAD: a LOAD of its first GEMM, or else its PPU-parameter LOAD, which
every unit has, emit.py) orders the STOREs
before the next layer's first GEMM.

The driver's profiling prefixes read counters only, not outputs, so they need no
exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, ceil_div
from celosia.rtl.dataflows import dataflow
from celosia.sw.analysis import load_bytes
from celosia.sw.compiler import lower_gemm
from celosia.sw.compiler.tiling import Unit, conv_attrs, load, window_lines
from celosia.sw.quant.model import QModel

__all__ = ["KeepPlan", "plan_keep"]


@dataclass
class KeepPlan:
    """Which layers keep their output on chip (:func:`plan_keep`)."""
    layers: tuple[str, ...] = ()   # the producers
    saved_bytes: int = 0           # DRAM bytes one run no longer moves (STOREs, LOADs, their fetch)
    #: layer -> instructions one run no longer executes: a consumer's ifmap LOADs removed,
    #: less (negative) the STORE runs and padding LOADs a conv producer adds
    saved_insns: dict = field(default_factory=dict)


def _one_block(units: list[Unit]) -> bool:
    """Every unit resident with one ifmap block (so it reads one ifmap half only)."""
    return all(u.resident for u in units) and len({t.block for u in units for t in u.tiles}) == 1


def _keepable(model: QModel, i: int, units: list[Unit], nxt: list[Unit], config: AccelConfig) -> str | None:
    """``"fc"`` or ``"conv"`` (the consumer's kind) when layer ``i`` keeps its output
    (module docstring), else ``None``."""
    layers = model.layers
    if i + 1 >= len(layers) or config.rows % config.cols:
        return None
    out = layers[i].output
    readers = [j for j in range(len(layers)) if out in model.layer_inputs(j)]
    if readers != [i + 1] or model.layer_inputs(i + 1) != [out]:
        return None
    ops = (layers[i].op, layers[i + 1].op)
    if ops == ("fc", "fc"):
        return "fc" if all(u.resident for u in units) and all(u.resident for u in nxt) else None
    if (ops != ("conv", "conv") or dataflow(config.dataflow).lowering is not lower_gemm
            or conv_attrs(layers[i])[6] != 1 or conv_attrs(layers[i + 1])[6] != 1
            or not (_one_block(units) and _one_block(nxt))):
        return None
    raw = _RawRows.of(layers[i + 1], config.rows)
    return "conv" if raw.rows_in and raw.cols_in else None   # (it reads some pixel of the map)


@dataclass(frozen=True)
class _RawRows:
    """Where a conv producer's output goes in the next conv layer's raw input rows, that
    layer's output being one block (:func:`~celosia.sw.compiler.lower_gemm.lower_conv`):
    input pixel ``(y, x)`` of channel ``c`` at block row ``(c // rows) * ny * nx + (y +
    pt) * nx + x + pl``, lane ``c % rows``, for the ``rows_in x cols_in`` pixels it reads."""
    ny: int
    nx: int
    pt: int
    pl: int
    rows_in: int                 # the map's rows it reads (0 .. rows_in-1)
    cols_in: int                 # the map's columns it reads
    runs: int                    # STOREs per output tile
    chunks: int                  # channel chunks (of `rows` lanes), ny * nx block rows each

    @classmethod
    def of(cls, layer, rows: int) -> _RawRows:
        H, W, C = layer.in_shape
        Ho, Wo, _ = layer.out_shape
        _, Fh, Fw, _ = layer.w.shape
        sh, sw, pt, pl, dh, dw, _ = conv_attrs(layer)
        ny, nx = window_lines(Ho, Fh, sh, dh), window_lines(Wo, Fw, sw, dw)
        rows_in, cols_in = max(0, min(H, ny - pt)), max(0, min(W, nx - pl))
        # no padding column and every column read: the rows lie back to back, one STORE
        runs = 1 if cols_in == W == nx else rows_in
        return cls(ny, nx, pt, pl, rows_in, cols_in, runs, ceil_div(C, rows))

    def border(self) -> list[tuple[int, int, int, int]]:
        """The padding of the block (every row no STORE writes) as ``(first row, n1, n2,
        bs2)``: ``n2`` runs of ``n1`` rows, ``bs2`` apart, one padding LOAD each: the rows
        before the first pixel, per chunk the gaps between two pixel rows (the right
        padding of one and the left of the next), the rows from each chunk's last pixel to
        the next chunk's first, the rows after the last pixel."""
        block, g = self.ny * self.nx, self.nx - self.cols_in
        first = self.pt * self.nx + self.pl                                # the first pixel's row
        last = (self.pt + self.rows_in - 1) * self.nx + self.pl + self.cols_in  # after the last
        runs = [(0, first, 1, 0)]
        if g and self.rows_in > 1:
            runs += [(c * block + first + self.cols_in, g, self.rows_in - 1, self.nx)
                     for c in range(self.chunks)]
        if self.chunks > 1:
            runs.append((last, block - last + first, self.chunks - 1, block))
        runs.append(((self.chunks - 1) * block + last, block - last, 1, 0))
        return [r for r in runs if r[1]]


def _block_loads(units: list[Unit]) -> tuple[int, int]:
    """``(DRAM bytes, LOAD instructions)`` of the ifmap block LOADs of ``units`` (each
    block's once per unit, with its first tile), their 32-byte fetch included."""
    nbytes = count = 0
    for unit in units:
        seen = set()
        for tile in unit.tiles:
            if tile.block not in seen:
                seen.add(tile.block)
                nbytes += sum(load_bytes(ld.__dict__) + isa.INSN_BYTES for ld in tile.block_loads)
                count += len(tile.block_loads)
    return nbytes, count


def _stored(units: list[Unit]) -> int:
    """DRAM bytes the STOREs of ``units`` write."""
    return sum(tile.m_len * tile.store.n_len for unit in units for tile in unit.tiles)


def _keep_fc(layer, units, alloc, config, batch, out_half):
    """Point an fc producer's STOREs at the next fc layer's input block in ``out_half``."""
    R = config.rows
    n_out = layer.out_features
    line_pitch, sample_pitch = dataflow(config.dataflow).lowering.fc_block_pitches(batch, ceil_div(n_out, R))
    for unit in units:
        for tile in unit.tiles:
            st = tile.store
            b0, c0 = divmod(st.dram_offset - alloc.dst[1], n_out)  # DRAM row = sample
            st.to_buf, st.buf_stride, st.lane0 = 1, sample_pitch, c0 % R
            st.buf_row = out_half * (config.ifmap_rows // 2) + (c0 // R) * line_pitch + b0 * sample_pitch


def _keep_conv(nxt_layer, raw: _RawRows, units, alloc, nxt_alloc, config, out_half):
    """Point a conv producer's STOREs at the next conv layer's raw input rows in
    ``out_half`` (module docstring) and give its first unit the padding LOADs."""
    R, half_rows = config.rows, config.ifmap_rows // 2
    H, W, C = nxt_layer.in_shape
    for unit in units:
        for tile in unit.tiles:
            st = tile.store
            c0 = st.dram_offset - alloc.dst[1]     # one block: the tile is the map from pixel (0, 0)
            assert 0 <= c0 < C and tile.m_len == H * W, (c0, tile.m_len)
            st.to_buf, st.buf_stride, st.lane0 = 1, 1, c0 % R
            st.buf_row = out_half * half_rows + (c0 // R) * raw.ny * raw.nx + raw.pt * raw.nx + raw.pl
            if raw.runs == 1:
                st.run_len = raw.rows_in * W
            else:                      # one STORE per output row read, skipping the padding
                st.runs, st.run_pitch, st.run_len, st.run_stride = raw.runs, W, raw.cols_in, raw.nx
    first = units[0]
    src_reg, src_off = nxt_alloc.src
    pads = [load(src_reg, src_off, min(R, C), n1=n1, bs1=1, n2=n2, bs2=bs2,
                 buf_row=(out_half - first.half) * half_rows + row,   # relative to the unit's block half
                 pad_en=1, pad_value=int(nxt_layer.in_zp))
            for row, n1, n2, bs2 in raw.border()]
    block = first.tiles[0].block_loads + pads
    for tile in first.tiles:
        tile.block_loads = block


def plan_keep(model: QModel, lowered: list[list[Unit]], allocs: list, config: AccelConfig,
              batch: int, enabled: bool = True) -> KeepPlan:
    """Choose the layers that keep their output on chip (module docstring) and rewrite
    their units in place: the producers' STOREs go to the ifmap buffer, the consumers'
    units start in the other ifmap half and load no ifmap block. ``lowered``: the units
    of every layer of ``model``, in order; ``allocs``: their
    :class:`~celosia.sw.compiler.alloc.Allocation` objects (a tile's first output channel is
    its STORE's offset from the layer's output)."""
    if not enabled:
        return KeepPlan()
    kept, saved, saved_insns = [], 0, {}
    layers = model.layers
    for i in range(len(lowered) - 1):
        units, nxt = lowered[i], lowered[i + 1]
        kind = _keepable(model, i, units, nxt, config)
        if kind is None:
            continue
        loaded, removed = _block_loads(nxt)
        stored = _stored(units)
        out_half = 1 - units[0].half
        if kind == "fc":
            _keep_fc(layers[i], units, allocs[i], config, batch, out_half)
        else:
            raw = _RawRows.of(layers[i + 1], config.rows)
            added = sum(len(u.tiles) for u in units) * (raw.runs - 1) + len(raw.border())
            if stored + loaded - isa.INSN_BYTES * added <= 0:   # the extra instructions cost more
                continue
            _keep_conv(layers[i + 1], raw, units, allocs[i], allocs[i + 1], config, out_half)
            stored -= isa.INSN_BYTES * added
            saved_insns[layers[i].name] = saved_insns.get(layers[i].name, 0) - added
        for unit in nxt:
            unit.half = out_half
            for tile in unit.tiles:
                tile.block_loads = []
        saved += stored + loaded
        kept.append(layers[i].name)
        saved_insns[layers[i + 1].name] = removed
    return KeepPlan(layers=tuple(kept), saved_bytes=saved, saved_insns=saved_insns)
