"""Lowering of the plain-GEMM family (``ws``, ``os``, ``feie``): fc and conv layers as GEMMs.

A fully connected layer is ``[batch, K] x [K, N]``: ``K`` cut into tiles of ``rows``,
``N`` into tiles of ``cols``, each (output tile, k tile) one
:class:`~celosia.sw.compiler.tiling.GemmOp`; the input stays resident in an ifmap
buffer half when it fits, else it is loaded in chunks of k tiles, each chunk shared by the
GEMMs of a *psum block* of output tiles that accumulate side by side in one psum half
(:func:`fc_plan`, :func:`fc_traffic`; docs/compiler.md).

A convolution forms its windows on chip (no im2col copies through DRAM): the raw input
rows of an output block are loaded once (per input-channel chunk of ``rows`` lanes,
padding inserted by the LOAD), and each kernel tap of each chunk is one windowed GEMM of
a 1x1 window (``GemmInsn.window = 1``) whose ``m`` rows the engines' window address
generator (``rtl/arrays/window.py``) walks over those rows. The block shape and whether
the block stays resident for every output-channel tile are chosen for the least DRAM
traffic (:func:`conv_plan`, :func:`conv_traffic`; docs/compiler.md).

Entry points, the same in every lowering family: :func:`lower_fc`, :func:`lower_conv`
and :func:`mapping`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from types import SimpleNamespace

from celosia.errors import CompileError
from celosia.rtl import isa
from celosia.rtl.arrays.feie import row_geometry
from celosia.rtl.config import FEIE_TAPS, AccelConfig, ceil_div
from celosia.rtl.dataflows import dataflow, ifmap_read_ports, psum_write_ports
from celosia.rtl.isa import BaseReg
from celosia.sw.compiler.alloc import Allocation
from celosia.sw.compiler.tiling import (GemmOp, OutTile, Unit, Window, conv_attrs, conv_blocks, load,
                                        raw_rows_load, split_units, store, subtracts_zero_point,
                                        window_lines)
from celosia.sw.quant.model import QLayer

__all__ = ["lower_fc", "lower_conv", "tap_rows", "row_taps", "row_cost", "pad_pixels", "fc_plan", "fc_traffic",
           "psum_block_tiles", "conv_plan", "conv_traffic", "mapping", "fc_block_pitches", "LOWERINGS",
           "TIMING_FIELDS"]

#: The run-only :class:`~celosia.rtl.config.AccelConfig` fields this family's choice of
#: mapping reads (:data:`~celosia.sw.compiler.program.RUN_ONLY_FIELDS`): feie's ifmap read
#: and psum write ports, in :func:`row_taps`'s cost.
TIMING_FIELDS = ("feie_read_ports", "feie_write_ports")


#: :func:`row_cost`'s bus cycles per GEMM: fetching it and its weight LOAD (two 32-byte
#: instructions) over the default 64-bit bus. A GEMM more costs them on a layer near the
#: bus's limit, where each instruction fetched delays a LOAD.
_GEMM_FETCH = 2 * 32 // 8

#: The largest ``dram_stride2`` of a LOAD.
_MAX_STRIDE2 = isa.field_max(isa.LoadInsn, "dram_stride2")


def lower_fc(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
    """A fully connected layer: ``[batch, K] x [K, N]`` as GEMMs of ``batch`` rows x one k
    tile (``rows`` inputs) x one output tile (``cols`` channels).

    The input stays resident in an ifmap half when it fits (loaded once). Otherwise it is
    loaded in chunks of :func:`fc_plan`'s ``kc`` k tiles (an ifmap group: one LOAD, and a
    second one for a partial last k tile) and the output tiles go in psum blocks of ``pb`` tiles
    (``OutTile.psum_block``): the block's GEMMs are emitted chunk by chunk, so each chunk
    serves all ``pb`` output tiles and the input crosses the bus once per block
    (:func:`fc_traffic`), not once per output tile.
    """
    R, C = config.rows, config.cols
    K, N = layer.w.shape
    kt, nt = ceil_div(K, R), ceil_div(N, C)
    src_reg, src_off = alloc.src
    _check_rows(layer, "psum_rows", batch, config, f"one output tile (batch={batch} rows)")
    kc, pb = fc_plan(K, N, batch, config)
    resident = batch * kt <= config.ifmap_rows // 2
    if not resident:
        _check_rows(layer, "ifmap_rows", batch, config, f"one input tile (batch={batch} rows)")

    def chunk_loads(k0, k1):
        """LOADs of k tiles ``k0 .. k1-1`` of the input, tile ``k`` from buffer row ``(k-k0)*batch``."""
        full = min(k1, K // R) - k0     # whole k tiles (of R inputs) in the chunk
        loads = []
        if full > 0:
            loads.append(load(src_reg, src_off + k0 * R, R, n1=batch, s1=K, bs1=1,
                              n2=full, s2=R, bs2=batch, buf_row=0))
        if k1 * R > K:                  # the partial last k tile
            loads.append(load(src_reg, src_off + (k1 - 1) * R, K - (k1 - 1) * R, n1=batch, s1=K,
                              bs1=1, buf_row=(k1 - 1 - k0) * batch))
        return loads

    block_loads = chunk_loads(0, kt) if resident else []
    tiles = []
    for j in range(nt):
        n_len = min(C, N - j * C)
        gemms = []
        for k in range(kt):
            k_len = min(R, K - k * R)
            weight = load(BaseReg.STATIC, alloc.weights + k * R * N + j * C, n_len,
                          n1=k_len, s1=N, bs1=1)
            k0 = k - k % kc
            ifmap = chunk_loads(k0, min(kt, k0 + kc)) if not resident and k == k0 else []
            gemms.append(GemmOp(k_len=k_len, n_len=n_len, weight=[weight], ifmap=ifmap,
                                ifmap_row=(k - (0 if resident else k0)) * batch,
                                ifmap_group=None if resident else k // kc))
        tiles.append(OutTile(m_len=batch, ops=gemms, store=store(layer, alloc.dst, j * C, N, n_len),
                             param_row=j, block=0, block_loads=block_loads,
                             psum_block=None if resident else j // pb))

    return split_units(tiles, alloc.params, resident, config, layer)


def fc_plan(K: int, N: int, batch: int, config: AccelConfig) -> tuple[int, int]:
    """``(kc, pb)`` of :func:`lower_fc`: k tiles per input chunk (all ``ceil(K/rows)`` when
    the whole input fits an ifmap half: resident) and output tiles per psum block (as many
    :func:`psum_block_tiles` of ``batch`` rows; 1 when resident: the input is read once
    anyway)."""
    kt = ceil_div(K, config.rows)
    kc = config.ifmap_rows // 2 // batch
    if kc >= kt:
        return kt, 1
    kc = max(kc, 1)     # (0: not even one k tile fits, lower_fc's error)
    return kc, psum_block_tiles(batch, config)


def psum_block_tiles(m_len: int, config: AccelConfig, tiles: int | None = None,
                     layer_tiles: int | None = None) -> int:
    """Output tiles of ``m_len`` psum rows per psum block (``OutTile.psum_block``): as many
    as a psum half holds (``psum_rows/2 // m_len``), at most a unit's parameter rows
    (``param_rows/2``), and a divisor of the latter, and of ``tiles`` when given (the output
    tiles of a group of a grouped conv, whose parameter rows start at multiples of it), so
    that no block straddles two units (:func:`~celosia.sw.compiler.tiling.split_units`
    cuts at multiples of ``param_rows/2``). Where the layer's parameter rows
    (``layer_tiles``, groups x output tiles) all fit one unit, no unit is cut and any
    count the psum half holds goes (8 tiles of 84 rows in a 256-row half: blocks of 3, 3
    and 2 instead of 2, the input read 3 times instead of 4)."""
    per_unit = config.param_rows // 2
    pb = max(1, min(config.psum_rows // 2 // max(m_len, 1), per_unit))
    if layer_tiles is not None and layer_tiles <= per_unit:
        return pb
    return max(d for d in range(1, pb + 1) if per_unit % d == 0 and (tiles is None or tiles % d == 0))


def conv_psum_block_tiles(m_len: int, config: AccelConfig, G: int, nt: int) -> int:
    """:func:`psum_block_tiles` for a conv of ``G`` groups of ``nt`` output tiles each
    (:func:`lower_conv` and :func:`conv_traffic` alike)."""
    return psum_block_tiles(m_len, config, nt if G > 1 else None, G * nt)


def fc_traffic(K: int, N: int, batch: int, config: AccelConfig) -> int:
    """DRAM bytes an fc layer's LOADs of input and weights read under :func:`fc_plan`:
    every weight once, the input (``batch * K`` bytes) once per psum block (once when
    resident)."""
    kc, pb = fc_plan(K, N, batch, config)
    resident = kc == ceil_div(K, config.rows)   # (fc_plan's resident input)
    blocks = 1 if resident else ceil_div(ceil_div(N, config.cols), pb)
    return K * N + batch * K * blocks


def lower_conv(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
    """A convolution as windowed GEMMs of one kernel tap over raw input rows (no im2col).

    An output block is ``hb`` output rows x ``wb`` output columns of one image and group
    (whole rows, ``wb = Wo``, unless one row does not fit). Its raw input rows (``ny x nx``
    pixels, padding inserted by the LOAD as the input zero point, which the folded bias
    turns into 0) are loaded per input-channel chunk of up to ``rows`` lanes, and each
    (chunk, fh, fw) is one windowed GEMM (``win_h = win_w = 1``, ``row_pitch = nx``, the tap
    offset ``fh*dil_h*nx + fw*dil_w`` folded into ``ifmap_row``) accumulating into the
    block's psum tile of up to ``cols`` output channels; on feie one GEMM takes several
    taps of a kernel row (:func:`row_taps`: runs of consecutive taps, or at a stride the
    phase sets, ``dil_w = stride_w``, whose GEMMs a chunk takes set by set). Either the
    whole block (every chunk) stays resident in an ifmap half and serves every output-channel tile, or each
    chunk's rows are loaded once per *psum block* of output tiles (``OutTile.psum_block``:
    :func:`psum_block_tiles` tiles of ``hb * wb`` rows side by side in one psum half) and
    shared by the ``Fh*Fw`` tap GEMMs of each of those tiles (emitted chunk by chunk, as
    :func:`lower_fc`'s chunks); :func:`conv_plan` picks the block shape and mode with the
    least DRAM traffic.

    Padding rows: a kernel row ``fh``'s GEMMs cover only the block's output rows whose input
    row ``ho*sh - pt + fh*dh`` is inside the image (:func:`tap_rows`: ``ifmap_row`` moved
    on, ``GemmOp.m_skip`` / ``m_rows`` and ``out_h`` shrunk; a GEMM with none is dropped),
    on feie (which subtracts the input zero point in the GEMM) and elsewhere where the
    input zero point is 0 (otherwise the bias folds in ``-in_zp`` times every weight, which
    only the padding rows' products cancel). A tile's first GEMM stays whole: chunk 0 starts
    with the kernel row that covers the most rows (docs/compiler.md, "Padding rows").
    """
    R, C = config.rows, config.cols
    H, W = layer.in_shape[:2]
    Ho, Wo, Cout = layer.out_shape
    _, Fh, Fw, cin_g = layer.w.shape
    sh, sw, pt, pl, dh, dw, G = conv_attrs(layer)
    cout_g = Cout // G
    if max(sh, sw) > 255:
        raise CompileError(f"layer {layer.name!r}: strides above 255 do not fit the windowed GEMM")
    chunks = [(c0, min(R, cin_g - c0)) for c0 in range(0, cin_g, R)]
    nt = ceil_div(cout_g, C)
    hb, wb, resident = conv_plan(layer, config, batch)
    K_g = Fh * Fw * cin_g
    pb = 1 if resident else conv_psum_block_tiles(hb * wb, config, G, nt)
    n_pb = ceil_div(nt, pb)
    # where the layer is one unit, the n_pb psum blocks share the tiles evenly (32 tiles in
    # blocks of at most 5: 5,4,5,4,5,4,5 instead of 5,5,5,5,5,5,2; the same ifmap reads, and
    # no block of so few GEMMs that its ifmap and weight LOADs outrun them: 1.2% fewer
    # cycles on 16x16 feie ResNet-18 conv5_x); else blocks of pb, which divides the unit
    balanced = G * nt <= config.param_rows // 2
    taps = row_taps(Fw, sw, dw, chunks[0][1], config, min(hb, Ho), wb, layer.in_zeros or 0.0,
                    pl, W if wb == Wo else None)
    # The output rows whose input row is padding are left out of a kernel row's GEMMs where
    # that padding adds nothing: the engine subtracts the zero point (feie), or it is 0
    # (elsewhere the bias folds in -in_zp * every weight, which the padding rows' in_zp
    # inputs cancel, so they must be computed).
    skip_pad = subtracts_zero_point(config) or int(layer.in_zp) == 0

    # The same in every block, so built once and shared (nothing changes them after lowering):
    # the weight LOADs of each GEMM of an output-channel tile, the windows of a block shape
    # and, when the block stays resident (its GEMMs load no ifmap), a tile's GEMMs.
    weight_lists: dict = {}
    windows: dict = {}
    resident_gemms: dict = {}

    def tile_weights(g, j, n_len):
        """The weight LOADs of each GEMM of output tile ``j`` of group ``g``, in GEMM order."""
        key = (g, j)
        if key not in weight_lists:
            lists = weight_lists[key] = []
            for c0, k_len in chunks:
                for fh in range(Fh):
                    for fw, n_taps, step in taps:
                        # the GEMM's weight rows: its taps fw, fw + step, ... in order
                        krow = (fh * Fw + fw) * cin_g + c0
                        base = alloc.weights + (g * K_g + krow) * cout_g + j * C
                        tap_pitch = step * cin_g * cout_g
                        if n_taps == 1 or tap_pitch <= _MAX_STRIDE2:
                            lists.append([load(BaseReg.STATIC, base, n_len, n1=k_len, s1=cout_g, bs1=1,
                                               n2=n_taps, s2=tap_pitch if n_taps > 1 else 0,
                                               bs2=k_len)])
                        else:       # a tap's stride past the LOAD's field: one LOAD per tap
                            lists.append([load(BaseReg.STATIC, base + t * tap_pitch, n_len, n1=k_len,
                                               s1=cout_g, bs1=1, buf_row=t * k_len)
                                          for t in range(n_taps)])
        return weight_lists[key]

    def window(n_taps, step, hbt, wbt, nx):
        key = (n_taps, step, hbt, wbt, nx)
        if key not in windows:      # (step > 1: a phase set, dil_w = stride_w)
            windows[key] = Window(win_h=1, win_w=n_taps, stride_h=sh, stride_w=sw, dil_h=1, dil_w=step,
                                  out_h=hbt, out_w=wbt, row_pitch=nx)
        return windows[key]

    def chunk_order(fhs):
        """``(fh, t)`` of a chunk's GEMMs, so that their weight LOADs merge
        (:func:`~celosia.sw.compiler.tiling.merge_loads`): kernel row by kernel row where
        each GEMM takes one tap or a whole kernel row (the taps in DRAM order: one tap at a
        time, all ``Fh * Fw`` taps merge into one LOAD); set by set (every kernel row's
        first set, then every kernel row's second, ...) where a kernel row has a GEMM of
        several taps and others (phase sets, a cut such as 2 + 1), so that the one-tap
        sets' LOADs, a kernel row apart in DRAM, merge into one."""
        if len(taps) > 1 and any(n > 1 for _, n, _ in taps):
            return [(fh, t) for t in range(len(taps)) for fh in fhs]
        return [(fh, t) for fh in fhs for t in range(len(taps))]

    tiles, block_rows = [], []
    for block_id, (img, g, ho0, hbt, wo0, wbt) in enumerate(conv_blocks(batch, G, Ho, Wo, hb, wb)):
        y0, x0 = ho0 * sh - pt, wo0 * sw - pl
        ny, nx = window_lines(hbt, Fh, sh, dh), window_lines(wbt, Fw, sw, dw)
        block_rows.append(ny * nx)
        spans = [tap_rows(ho0, hbt, fh, H, sh, pt, dh) if skip_pad else (0, hbt) for fh in range(Fh)]
        # the tile's first GEMM (accumulate = 0) initializes every psum row: chunk 0 starts at
        # the kernel row whose input rows cover the most of the block (all of it in a
        # "same"-padded conv), its first GEMM kept whole, and takes the others in turn after it
        # (a rotation: the weight LOADs stay in runs that merge_loads merges); every other
        # GEMM covers only its kernel row's in-image rows (tap_rows), none if there are none
        first_fh = max(range(Fh), key=lambda fh: spans[fh][1] - spans[fh][0])
        fh_order = [(first_fh + d) % Fh for d in range(Fh)]

        def rows_load(c0, k_len, buf_row):
            return raw_rows_load(layer, alloc.src, g * cin_g + c0, k_len, img, y0, ny, x0, nx, buf_row)

        block_loads = ([rows_load(c0, kl, i * ny * nx) for i, (c0, kl) in enumerate(chunks)]
                       if resident else [])
        for j in range(nt):
            n_len = min(C, cout_g - j * C)
            cache_key = (g, j, hbt, wbt, tuple(spans))
            gemms = resident_gemms.get(cache_key) if resident else None
            if gemms is None:
                gemms = []
                weights = tile_weights(g, j, n_len)
                for i, (c0, k_len) in enumerate(chunks):
                    # per chunk: its first GEMM loads the chunk's rows
                    ifmap = [] if resident else [rows_load(c0, k_len, 0)]
                    for fh, t in chunk_order(fh_order if i == 0 else range(Fh)):
                        fw, n_taps, step = taps[t]
                        lo, hi = (0, hbt) if i == 0 and fh == first_fh and t == 0 else spans[fh]
                        if lo >= hi:
                            continue    # every input row of this kernel row is padding
                        gemms.append(GemmOp(
                            k_len=k_len, n_len=n_len, weight=weights[(i * Fh + fh) * len(taps) + t],
                            ifmap=ifmap, ifmap_row=((i * ny * nx if resident else 0)
                                                    + (lo * sh + fh * dh) * nx + fw * dw),
                            ifmap_group=None if resident else i,
                            window=window(n_taps, step, hi - lo, wbt, nx),
                            m_skip=lo * wbt, m_rows=None if hi - lo == hbt else (hi - lo) * wbt))
                        ifmap = []
                if resident:
                    resident_gemms[cache_key] = gemms
            offset = ((img * Ho + ho0) * Wo + wo0) * Cout + g * cout_g + j * C
            tiles.append(OutTile(m_len=hbt * wbt, ops=gemms,
                                 store=store(layer, alloc.dst, offset, Cout, n_len),
                                 param_row=g * nt + j, block=block_id, block_loads=block_loads,
                                 psum_block=None if pb == 1 else block_id * n_pb + (
                                     j * n_pb // nt if balanced else j // pb)))

    units = split_units(tiles, alloc.params, resident, config, layer)
    if pb > 1:
        for unit in units:
            _merge_last_chunks(unit, block_rows, len(chunks), config.ifmap_rows // 2)
    return units


def _merge_last_chunks(unit: Unit, block_rows: list[int], nc: int, i_half: int) -> None:
    """Shorten the tail of ``unit``: the last ``q`` input-channel chunks of its last psum
    block become one ifmap group (one ifmap half holds ``q`` chunks' raw rows, ``q *
    block_rows <= i_half``), loaded as one tile with the chunks side by side. The block's
    GEMMs go ifmap group by ifmap group, each group's GEMMs of every tile in tile order, so
    its tiles' last GEMMs, hence their STOREs, come ``q * (GEMMs per chunk)`` GEMMs apart
    instead of one chunk's GEMMs apart: each STORE but the last overlaps the GEMMs of the
    next tiles (one PPU lane stores a 49-row tile of 16 channels in 792 cycles, a chunk's 9
    tap GEMMs take 576 on a 16x16 os array). The same transfers, GEMMs and DRAM bytes; the
    unit's last STORE stays after its last GEMM (docs/compiler.md, "The ends of a unit")."""
    last = unit.tiles[-1]
    if last.psum_block is None:
        return
    rows = block_rows[last.block]
    q = min(nc, i_half // rows)
    if q < 2:
        return
    first = nc - q
    for tile in unit.tiles:
        if tile.psum_block != last.psum_block:
            continue
        ops, group = [], None
        for op in tile.ops:
            i = op.ifmap_group
            if i is None or i < first:
                ops.append(op)
                continue
            # chunk i's rows sit (i - first) * rows further in the group's tile, loaded with
            # the group's first GEMM
            loads = [dataclasses.replace(ld, buf_row=ld.buf_row + (i - first) * rows) for ld in op.ifmap]
            op = dataclasses.replace(op, ifmap=[], ifmap_group=first,
                                     ifmap_row=op.ifmap_row + (i - first) * rows)
            if group is None:
                group = op
            group.ifmap = group.ifmap + loads
            ops.append(op)
        tile.ops = ops


def tap_rows(ho0: int, hbt: int, fh: int, H: int, sh: int, pt: int, dh: int) -> tuple[int, int]:
    """``(lo, hi)``: the output rows ``ho0 + lo .. ho0 + hi - 1`` of a block of ``hbt`` rows
    from ``ho0`` whose input row ``ho*sh - pt + fh*dh`` under kernel row ``fh`` lies inside
    the ``H`` rows of the image (a contiguous run; ``lo >= hi``: none, all padding)."""
    lo = max(0, -((fh * dh - pt) // sh) - ho0)              # ceil((pt - fh*dh) / sh) - ho0
    hi = min(hbt, -((fh * dh - pt - H) // sh) - ho0)        # ceil((H + pt - fh*dh) / sh) - ho0
    return lo, max(lo, hi)


def row_taps(Fw: int, sw: int, dw: int, k_len: int, config: AccelConfig, out_h: int = 1,
             out_w: int = 1, zeros: float = 0.0, pad_left: int = 0,
             in_w: int | None = None) -> list[tuple[int, int, int]]:
    """``(first kernel column fw, taps, step)`` of each GEMM along one kernel row (its taps
    are the kernel columns ``fw, fw + step, ...``): one tap each (``win_w = 1``), except on
    the broadcast FEIE engine (``gemm_window = "row"``, rtl/arrays/feie.py), which takes up
    to :data:`~celosia.rtl.config.FEIE_TAPS` taps of an undilated kernel row in one GEMM in
    one of two ways:

    * *runs* of consecutive taps (``step = 1``, the GEMM's ``dil_w = 1``) where the taps are
      at least the stride;
    * *phase sets* at a stride ``sw = d`` with ``2 <= d < Fw``: the taps ``r, r + d, r + 2d,
      ...`` of each phase ``r < d`` (cut into sets of up to ``FEIE_TAPS``; ``step = d``, the
      GEMM's ``dil_w = stride_w = d``), which read every pixel of theirs for ``win_w``
      consecutive outputs as at stride 1 (a stride-2 3-tap run reaches 2 outputs per pixel
      but walks 2 pixels per output: at most 75% of its PEs busy).

    A GEMM of ``n`` taps must fit: the outputs one pixel reaches (``1 + (s <= n-1) + (2s <=
    n-1)``, ``s = sw`` for a run, 1 for a phase set) within the array's rows and its ``n *
    k_len`` weight rows within a weight-buffer half. The candidates are every cut of the
    kernel row into runs that fit (the longest runs first: 3, 2 + 1, 1 + 2, 1 + 1 + 1 for
    3 taps) and the phase sets; the one with the fewest cycles by :func:`row_cost` for
    GEMMs of ``out_h`` output rows of ``out_w`` outputs (the block's) with a fraction
    ``zeros`` of the inputs at the zero point (the layer's calibration measured it,
    :attr:`~celosia.sw.quant.model.QLayer.in_zeros`; 0 = dense) wins, the earlier on a tie.
    With ``in_w`` (the input's width; the GEMMs' rows are whole output rows from column 0)
    and ``pad_left``, each GEMM's padding pixels count as zeros (:func:`pad_pixels`).
    Dense, more PE rows busy wins (3 taps on 8 rows: 2 + 1, all 8 rows, instead of 3 on 6);
    sparse, fewer GEMMs (each writes every output once through the one psum write port) and
    more reuse of each pixel read."""
    if dataflow(config.dataflow).gemm_window != "row" or dw != 1:
        return [(fw, 1, 1) for fw in range(Fw)]

    def fits(n, s):
        return n == 1 or (1 + (s <= n - 1) + (2 * s <= n - 1) <= config.rows
                          and n * k_len <= config.weight_rows // 2)

    def cut(first, count, step, s):
        """``count`` taps from ``first``, ``step`` apart, in GEMMs as long as fit."""
        out, i = [], 0
        while i < count:
            n = min(FEIE_TAPS, count - i)
            while not fits(n, s):
                n -= 1
            out.append((first + i * step, n, step if n > 1 else 1))
            i += n
        return out

    def runs(fw):
        """Every cut of taps ``fw ..`` into runs that fit (taps at least the stride),
        longest first."""
        if fw == Fw:
            yield []
            return
        for n in range(min(FEIE_TAPS, Fw - fw), 0, -1):
            if n == 1 or (sw <= n and fits(n, sw)):
                for rest in runs(fw + n):
                    yield [(fw, n, 1), *rest]

    candidates = list(runs(0))
    if 2 <= sw < Fw:
        candidates.append([t for r in range(sw) for t in cut(r, len(range(r, Fw, sw)), sw, 1)])
    ports, wports = ifmap_read_ports(config), psum_write_ports(config)

    def cost(sets):
        return sum(row_cost(n, sw if step == 1 and n > 1 else 1, k_len, out_h, out_w, config.rows,
                            zeros, ports, wports,
                            pad_pixels(fw, n, step, sw, out_w, pad_left, in_w) if in_w else (0, 0))
                   for fw, n, step in sets)
    return min(candidates, key=cost)


def pad_pixels(fw: int, taps: int, step: int, sw: int, out_w: int, pad_left: int, in_w: int) -> tuple[int, int]:
    """``(leading, trailing)``: how many of the pixels a whole output row's task walks in
    the GEMM of :func:`row_taps`'s ``(fw, taps, step)`` (``out_w`` outputs at stride ``sw``)
    are padding, before input column 0 and from column ``in_w`` on. Its pixel ``p`` is input
    column ``fw - pad_left + p * c``: ``c = 1`` in a run of taps, ``sw`` for one tap (the
    outputs' own pixels), ``step`` in a phase set (:func:`~celosia.rtl.arrays.feie.row_geometry`)."""
    c, wp = (sw, out_w) if taps == 1 else (1, (out_w - 1) * sw + taps) if step == 1 else (step, out_w - 1 + taps)
    cols = [fw - pad_left + p * c for p in range(wp)]
    return sum(col < 0 for col in cols), sum(col >= in_w for col in cols)


def row_cost(taps: int, s: int, k_len: int, out_h: int, out_w: int, rows: int,
             zeros: float = 0.0, read_ports: int = 1, write_ports: int = 1,
             pad: tuple[int, int] = (0, 0)) -> float:
    """Cycles a windowed GEMM of ``taps`` taps at pixel step ``s`` (``out_h`` rows of
    ``out_w`` outputs, ``k_len`` channels, a fraction ``zeros`` of the inputs at the zero
    point) takes on the FEIE engine, about (docs/dataflows.md, "FEIE"): the most of its
    slowest group's non-zero inputs (one per cycle), all the groups' pixels over the
    ``read_ports`` ifmap read ports (a zero pixel costs its read) and its outputs over the
    ``write_ports`` psum write ports, plus ``G + 2`` (the start and end of a GEMM taken while
    the one before runs) and ``_GEMM_FETCH`` (the bus cycles of fetching the GEMM and its
    weight LOAD). The GEMM ends with its slowest group: with each input zero at random
    (probability ``zeros``), a group of ``p`` pixels has ``p * k_len`` inputs, on average
    ``(1 - zeros)`` of them non-zero with a standard deviation ``sqrt(p * k_len * zeros *
    (1 - zeros))``, and the slowest of the ``n`` groups with pixels takes about the busiest
    one's mean plus :func:`expected_max_normal` ``(n)`` of those deviations (dense: none).
    ``pad``: the leading and trailing pixels of a whole output row's task that are padding
    (:func:`pad_pixels`): zero, each costs its read only."""
    geo = row_geometry(SimpleNamespace(window=1, win_w=taps, stride_w=s, dil_w=1, stride_h=1, row_pitch=0,
                                       out_h=out_h, out_w=out_w, k_len=k_len), rows)
    pixels = [sum((n - 1) * geo.s + geo.S for _, _, n in grp.pieces) for grp in geo.groups]
    lead, trail = pad
    tail = geo.Wp - trail

    def real(x, n):             # a task's pixels [x*s, (x+n-1)*s + S) less its padding
        a, b = x * geo.s, (x + n - 1) * geo.s + geo.S
        return b - a - max(0, min(b, lead) - a) - max(0, b - max(a, tail))
    inputs = max(sum(real(x, n) for _, x, n in grp.pieces) for grp in geo.groups) * k_len
    spread = expected_max_normal(sum(1 for p in pixels if p)) * math.sqrt(inputs * zeros * (1 - zeros))
    return (max(inputs * (1 - zeros) + spread, sum(pixels) / read_ports, out_h * out_w / write_ports)
            + geo.G + 2 + _GEMM_FETCH)


@functools.lru_cache(maxsize=None)
def expected_max_normal(n: int) -> float:
    """The mean of the largest of ``n`` independent standard normal variables (0 for one;
    0.564 for two, 0.846 for three, 1.029 for four, 1.424 for eight): the integral of ``x *
    n * phi(x) * Phi(x)**(n-1)``, by the midpoint rule over [-8, 8] in steps of 1/256."""
    if n <= 1:
        return 0.0
    h, total = 1 / 256, 0.0
    for i in range(16 * 256):
        x = -8 + (i + 0.5) * h
        phi = math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        total += x * n * phi * (0.5 * (1 + math.erf(x / math.sqrt(2)))) ** (n - 1)
    return total * h


def conv_traffic(layer: QLayer, config: AccelConfig, batch: int, hb: int, wb: int,
                 resident: bool) -> int:
    """DRAM bytes a conv layer's LOADs read (ifmap + weights; padding is not read) when
    :func:`lower_conv` tiles it in blocks of ``hb`` output rows x ``wb`` columns: each block
    reads its raw input rows once (``resident``) or once per psum block of output-channel
    tiles (:func:`psum_block_tiles`), and every
    weight of its group once per block."""
    H, W, _ = layer.in_shape
    Ho, Wo, Cout = layer.out_shape
    _, Fh, Fw, cin_g = layer.w.shape
    sh, sw, pt, pl, dh, dw, G = conv_attrs(layer)
    cout_g = Cout // G
    nt = ceil_div(cout_g, config.cols)
    reads = 1 if resident else ceil_div(nt, conv_psum_block_tiles(hb * wb, config, G, nt))

    def inside(o0, n, size, stride, pad, taps, dil):
        lo = o0 * stride - pad
        return max(0, min(size, lo + window_lines(n, taps, stride, dil)) - max(0, lo))

    per_group = 0
    for _, _, ho0, hbt, wo0, wbt in conv_blocks(1, 1, Ho, Wo, hb, wb):
        pixels = inside(ho0, hbt, H, sh, pt, Fh, dh) * inside(wo0, wbt, W, sw, pl, Fw, dw)
        per_group += pixels * cin_g * reads + Fh * Fw * cin_g * cout_g
    return batch * G * per_group


def conv_plan(layer: QLayer, config: AccelConfig, batch: int) -> tuple[int, int, bool]:
    """``(hb, wb, resident)`` of :func:`lower_conv`: among the block shapes that fit the
    buffers (whole output rows, ``wb = Wo``; only when not even one row fits, one output
    row in blocks of ``wb`` columns), resident (every chunk's raw rows in one ifmap half)
    or per chunk (one chunk's rows in a half), the one with the least DRAM traffic
    (:func:`conv_traffic`), ties to fewer GEMMs, then to longer GEMMs (``hb * wb`` rows).
    A :class:`~celosia.errors.CompileError` when not even one output pixel fits. (The
    weights count once per block even when :func:`~celosia.sw.compiler.alloc.plan_weights`
    later keeps them resident, which runs after lowering: for such a layer the plan may
    re-read the input more than it needs to.)"""
    R = config.rows
    i_half, p_half = config.ifmap_rows // 2, config.psum_rows // 2
    Ho, Wo, _ = layer.out_shape
    _, Fh, Fw, cin_g = layer.w.shape
    sh, sw, _, _, dh, dw, _ = conv_attrs(layer)
    nc = ceil_div(cin_g, R)
    out_h_max = isa.field_max(isa.GemmInsn, "out_h")

    def fits(hb, wb, resident):
        rows = window_lines(hb, Fh, sh, dh) * window_lines(wb, Fw, sw, dw) * (nc if resident else 1)
        return hb * wb <= p_half and rows <= i_half

    shapes = [(hb, Wo) for hb in range(1, min(Ho, out_h_max) + 1)]
    options = [(hb, wb, res) for hb, wb in shapes for res in (True, False) if fits(hb, wb, res)]
    if not options:
        options = [(1, wb, res) for wb in range(1, Wo + 1) for res in (True, False) if fits(1, wb, res)]
    if not options:
        raise CompileError(f"layer {layer.name!r}: not even one output pixel's window "
                           f"({Fh}x{Fw} input pixels) fits an ifmap buffer half "
                           f"(ifmap_rows={config.ifmap_rows}); increase ifmap_rows")

    def key(option):
        hb, wb, res = option
        blocks = ceil_div(Ho, hb) * ceil_div(Wo, wb)   # GEMMs = blocks * the same factor
        return conv_traffic(layer, config, batch, hb, wb, res), blocks, -hb * wb

    return min(options, key=key)


def mapping(layer: QLayer, units: list[Unit], config: AccelConfig) -> dict:
    """The report's extra tiling facts of a layer: none for the plain GEMM (the report
    names the dataflow)."""
    return {}


def fc_block_pitches(batch: int, lines: int) -> tuple[int, int]:
    """``(line pitch, sample pitch)`` of :func:`lower_fc`'s resident input block: input
    channel ``c`` of sample ``b`` is at block row ``(c // rows) * batch + b``, lane
    ``c % rows`` (``lines = ceil(K / rows)``)."""
    return batch, 1


#: op -> lowering of the layers this family maps.
LOWERINGS = {"fc": lower_fc, "conv": lower_conv}


def _check_rows(layer, name, rows_needed, config, what):
    half = getattr(config, name) // 2
    if rows_needed > half:
        raise CompileError(
            f"layer {layer.name!r} needs {rows_needed} rows of the {name.split('_')[0]} buffer half "
            f"for {what}, but {name}={getattr(config, name)} gives {half} per half; increase "
            f"{name} or reduce the batch")
