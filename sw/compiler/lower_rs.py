"""Lowering for the row-stationary array (``dataflow = "rs"``): windowed GEMMs.

The rs array convolves raw ifmap rows (no im2col): a windowed GEMM
(:data:`~celosia.rtl.isa.GemmInsn`, ``window = 1``) gives it ``win_h x win_w``
filter taps of ``k_len`` input channels, ``out_h`` output rows of ``out_w`` pixels
and up to ``cols`` output channels (rtl/arrays/rs.py). The logical PE set of a
layer is its ``Fh`` filter rows x ``Ho`` output rows; it is folded onto the
``rows x cols`` array (docs/dataflows.md):

* filter rows in blocks of ``Fh' = min(Fh, rows, ...)`` and filter columns in blocks
  of ``Fw'`` (the filter scratchpad holds ``Fw' * k_len`` entries, the weight-buffer
  half ``Fh' * Fw' * k_len`` rows), input channels in chunks of ``rows`` lanes:
  one accumulating GEMM per (chunk, filter block);
* output rows in tiles of ``hb <= cols`` (one PE column each), as many as the ifmap
  line registers (``rs_lines``) and the buffers allow; when not even one whole output
  row fits the ifmap buffer half, one output row in blocks of columns; and when whole
  rows leave PE columns idle (``Wo * cols`` above the psum half), also up to ``cols``
  output rows in blocks of columns (one STORE run per output row); and, streamed with
  one filter row per GEMM (compact lines), *segmented rows*: ``hb`` output rows each cut
  into ``segs`` segments of ``ow`` columns, ``hb * segs <= cols`` PE columns, segment
  ``h`` of output row ``y`` the GEMM's output row ``y*segs + h`` (one LOAD per segment
  lays its input columns out as that line; pixel ``(y, x)`` lands in psum row
  ``y*segs*ow + x``, the columns past the map's end computed and not stored), for maps
  with fewer output rows than PE columns or heights that leave columns idle; the cost
  model choosing.

The ifmap block of a tile is loaded once (resident mode: every chunk's
``(hb-1)*stride + (Fh-1)*dil + 1`` input rows of padded width, padding inserted by
the LOAD) and each GEMM addresses its window inside it; otherwise each GEMM loads
exactly its window's rows (with one filter row only every ``stride``-th row, packed),
or, with one filter row per GEMM, a chunk's GEMMs share one window of unpacked input
rows when it fits the ifmap half (an ifmap group: each filter row's input rows once,
not once per filter row), once for the output tiles of a psum block
(``OutTile.psum_block``, the channel tiles side by side in a psum half, emitted window
by window); segmented tiles at a stride share packed windows by row class instead (the
filter rows with the same ``fh*dil % stride`` read the same input rows), in ifmap groups
that fill the ifmap half (``row_classes`` in :func:`lower_conv`). A conv GEMM loads its weight
rows with one LOAD that merges with no other, so a conv's weight groups are capped at
``queue_depth // 2`` LOADs (:func:`_units`). A fully connected layer maps as Eyeriss
maps one: the input vector is cut into lines of ``rows`` features (the "filter rows"),
the samples of the batch are the output rows (stride = lines per sample); its GEMMs'
weight LOADs merge within a weight group, which is not capped.

Entry points, the same in every lowering family: :func:`lower_fc`, :func:`lower_conv`
and :func:`mapping`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from celosia.errors import CompileError
from celosia.rtl.config import RS_SPAD, AccelConfig, ceil_div
from celosia.rtl import isa
from celosia.rtl.arrays.rs import gemm_timing
from celosia.rtl.dma import load_cycles
from celosia.rtl.isa import BaseReg
from celosia.sw.compiler.alloc import Allocation
from celosia.sw.compiler.lower_gemm import psum_block_tiles
from celosia.sw.compiler.tiling import (GemmOp, OutTile, Unit, Window, conv_attrs, conv_blocks,
                                        load, raw_rows_load, split_units, store, window_lines,
                                        window_load)
from celosia.sw.quant.model import QLayer

__all__ = ["lower_conv", "lower_fc", "mapping", "layer_cycles", "LOWERINGS", "TIMING_FIELDS"]

#: The :class:`~celosia.rtl.config.AccelConfig` fields of the DRAM timing this family's
#: choice of mapping reads (:func:`layer_cycles`, through :func:`~celosia.rtl.dma.load_cycles`):
#: unlike the other families' programs, an rs program changes with them
#: (:func:`~celosia.sw.compiler.program.program_key`).
TIMING_FIELDS = ("bus_bits", "dram_latency")

#: The largest ``dram_stride2`` of a LOAD.
_MAX_STRIDE2 = isa.field_max(isa.LoadInsn, "dram_stride2")


def _gemm_op_timing(op: GemmOp, config: AccelConfig, first: int = 1) -> tuple[int, int, int]:
    """``(ready, last, done)`` of the windowed GEMM ``op`` (:func:`~celosia.rtl.arrays.rs.gemm_timing`)."""
    w = op.window
    return gemm_timing(config.rows, win_h=w.win_h, win_w=w.win_w, k_len=op.k_len, n_len=op.n_len,
                       out_h=w.out_h, out_w=w.out_w, stride_h=w.stride_h, dil_h=w.dil_h, first=first)


def _chained_cycles(prev: GemmOp, op: GemmOp, config: AccelConfig) -> int:
    """Cycles from the last MAC of ``prev`` to the last MAC of ``op`` issued right after it
    (:class:`~celosia.rtl.arrays.rs.RSTiming`): when ``op`` may fill its first step during
    ``prev``'s last step (``k_len + 1 >= prev.out_h``), it runs as if accepted in ``prev``'s
    last MAC cycle minus one with its first pass from ``2 - prev.k_len``; else it waits for
    ``prev``'s ``done`` (``out_h + 2`` after its last MAC)."""
    if op.k_len + 1 >= prev.window.out_h:
        return _gemm_op_timing(op, config, first=2 - prev.k_len)[1] - 1
    return prev.window.out_h + 2 + _gemm_op_timing(op, config)[1]


def _loads_cycles(loads, config: AccelConfig) -> int:
    """The load engine's cycles of ``loads`` one after the other (:func:`~celosia.rtl.dma.load_cycles`)."""
    nb = config.bus_bytes
    total = 0
    for ld in loads:
        fields = dict(ld.__dict__)
        fields["dram_offset"] %= nb
        total += _load_cycles(tuple(fields.items()), config)
    return total


@functools.lru_cache(maxsize=1 << 16)
def _load_cycles(fields: tuple, config: AccelConfig) -> int:
    """:func:`~celosia.rtl.dma.load_cycles` of the LOAD with ``fields`` (``(name, value)``
    pairs), remembered: the mapping search costs the same LOADs over and over. With the
    base registers at 0 (as the mapping search asks), a LOAD's bus requests depend on its
    start address only through its place in a bus word (:func:`~celosia.rtl.dma.load_plan`),
    so :func:`_loads_cycles` asks with ``dram_offset`` modulo the bus word: LOADs of the
    same shape at other addresses share one answer."""
    return load_cycles(dict(fields), config)


def _even_block(n: int, b: int) -> int:
    """The smallest block size that covers ``n`` in as few blocks as blocks of ``b`` do
    (blocks of about equal size: 13 rows in blocks of up to 8 -> 7 + 6, not 8 + 5)."""
    return ceil_div(n, ceil_div(n, b))


def _pick(options, key):
    """The mapping option with the lowest ``key`` (one place, so that a test can see every
    option's cost and force another one)."""
    return min(options, key=key)


def _units(tiles, params_at: int, resident: bool, config: AccelConfig, layer: QLayer,
           staggered: bool = False) -> list[Unit]:
    """:func:`~celosia.sw.compiler.tiling.split_units`, each unit's weight groups limited to
    ``queue_depth // 2`` LOADs (``Unit.group_loads``). An rs GEMM's weight LOAD (its filter
    taps, loop 2) merges with no other, so a weight group of ``n`` tiles is ``n`` LOADs,
    queued at its first GEMM: they pile up in the LOAD groups just before it, more than the
    LOAD queue holds, and the in-order fetch stops behind them, the GEMMs after them
    unfetched, until the load DMA has run the excess (8x8, groups of up to 21 LOADs / of 4:
    ResNet-18 conv5_x 1.16 M / 1.15 M cycles, AlexNet CONV3 3.17 M / 3.04 M)."""
    units = split_units(tiles, params_at, resident, config, layer)
    for unit in units:
        unit.group_loads = max(1, config.queue_depth // 2 - staggered)
    return units


def _ramp(cap: int) -> int:
    """GEMMs in the weight groups before they reach ``cap`` GEMMs (1, 2, 4, ...)."""
    total, size = 0, 1
    while size < cap:
        total, size = total + size, 2 * size
    return total


def layer_cycles(ops: list[GemmOp], config: AccelConfig, block_loads=(), tiles: int = 1,
                 blocks: int = 1, group_loads: int | None = None) -> int:
    """Estimated cycles of a layer of ``blocks`` ifmap blocks of ``tiles`` output tiles
    each, every tile's GEMMs like ``ops`` (the compiler's cost of a mapping), from the
    engines' own timing: the rs array's back to back (:func:`_chained_cycles`, each GEMM
    from the last MAC of the one before; a GEMM whose LOADs end later starts on an idle
    engine when they end, and the layer's last GEMM runs until its ``done``) and the load
    DMA's (:func:`~celosia.rtl.dma.load_cycles`), one LOAD after the other, played GEMM by
    GEMM over the whole layer.

    The LOADs come in the groups :mod:`~celosia.sw.compiler.emit` forms, each due at its
    first GEMM and released when the first GEMM of the group before it starts (its
    buffer half's last readers are done): the *ifmap groups*, the runs of consecutive
    ``ops`` of one ``GemmOp.ifmap_group`` (not ``None``: one window, loaded with the run's
    first GEMM), else one GEMM each, a block's resident ifmap LOADs (``block_loads``) with
    its first GEMM's; and the *weight groups*: with ``group_loads`` (a conv's
    ``Unit.group_loads``: its GEMMs' weight LOADs merge with no other), runs of 1, 2, 4, ...
    GEMMs up to ``group_loads`` LOADs and what a streaming weight half holds, all of a
    run's weight LOADs due at its first GEMM (without, one GEMM each). The ramp of the
    weight groups is what made the earlier model (each GEMM's weight LOADs overlapping the
    GEMMs just before it) rank a 4x4x8 3x3 conv's streamed 2-row tiles in 2 segments
    (1,256 cycles measured) ahead of resident 4-row tiles of 2 filter rows (1,200):
    their second block's first GEMM waits for three weight LOADs and its window. The
    blocks are played until the weight groups have stopped growing for a whole block and
    three blocks are done; the rest take as long as the last two on average (a layer of
    thousands of blocks costs a few: ``benchmarks/layers.py --backend perf`` on 8x8 and
    16x16 ResNet-18 conv2_x, conv3_x, conv3_x.ds, conv5_x, VGG-16 conv3_1, AlexNet CONV3 and
    MobileNet v1 conv2.pw took 11.9 s with the model before, 46.3 s with every block
    played, 13.5 s so).
    STOREs (overlapped with the following tiles) and the PPU parameter LOAD (the same for
    every mapping) are left out."""
    seen = {}   # LOAD lists -> cycles (a psum block's copies of a GEMM share its weight LOADs)

    def cycles_of(lds):
        if id(lds) not in seen:
            seen[id(lds)] = _loads_cycles(lds, config)
        return seen[id(lds)]

    n = len(ops)
    chained = [_chained_cycles(ops[t - 1], op, config) for t, op in enumerate(ops)]
    idle = [_gemm_op_timing(op, config)[1] for op in ops]
    weights = [cycles_of(op.weight) for op in ops]
    ifmaps = [cycles_of(op.ifmap) for op in ops]
    span_first = [t == 0 or op.ifmap_group is None or op.ifmap_group != ops[t - 1].ifmap_group
                  for t, op in enumerate(ops)]
    blk = _loads_cycles(block_loads, config)
    n_loads = [len(op.weight) for op in ops]
    if group_loads is None:
        cap = 1
    else:   # emit's cap: what a streaming half holds at the pitch of the largest tile
        pitch = max(o.k_len * o.window.win_h * o.window.win_w for o in ops)
        cap = max(1, config.weight_rows // 2 // pitch)

    per_block = tiles * n
    total = blocks * per_block
    load_end = 0                 # the load DMA's last busy cycle
    last = None                  # the last MAC of the GEMM before
    starts = []                  # each GEMM's start (acceptance)
    ends = []                    # the last MAC of each block's last GEMM
    w_first, w_prev_first, w_left, w_size = 0, 0, 0, 1   # the weight group: its first GEMM ...
    i_first, i_prev_first = 0, 0                          # the ifmap group
    for g in range(total):
        t = g % n
        if w_left == 0:          # a new weight group: all of its weight LOADs now
            w_prev_first, w_first = w_first, g
            w_left = min(w_size, total - g)
            while w_left > 1 and sum(n_loads[(g + j) % n] for j in range(w_left)) > group_loads:
                w_left -= 1      # (a group ends early rather than be more LOADs)
            w_size = min(2 * w_size, cap)
            rel = starts[w_prev_first] if g else 0
            load_end = max(load_end, rel) + sum(weights[(g + j) % n] for j in range(w_left))
        w_left -= 1
        if span_first[t]:        # a new ifmap group: its window (and the block's LOADs)
            i_prev_first, i_first = i_first, g
            rel = starts[i_prev_first] if g else 0
            load_end = max(load_end, rel) + ifmaps[t] + (blk if g % per_block == 0 else 0)
        if last is None:
            last = load_end + idle[t]
        else:
            last = max(last + chained[t], load_end + idle[t])
        starts.append(last - idle[t])
        if (g + 1) % per_block == 0:
            ends.append(last)
            # every block the same GEMMs and LOADs: once the weight groups have stopped
            # growing for a whole block, the blocks after it take as long as the last two
            # (on average: a group may straddle two blocks)
            k = len(ends)
            if k >= 3 and w_size == cap and (g + 1) - per_block > _ramp(cap) and k < blocks:
                last += (blocks - k) * (ends[-1] - ends[-3]) // 2
                break
    return last + ops[-1].window.out_h + 2


def lower_conv(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
    """A convolution on the rs array (see the module docstring)."""
    R, C, L = config.rows, config.cols, config.rs_lines
    i_half, p_half, w_half = config.ifmap_rows // 2, config.psum_rows // 2, config.weight_rows // 2
    Ho, Wo, Cout = layer.out_shape
    _, Fh, Fw, cin_g = layer.w.shape
    sh, sw, pt, pl, dh, dw, G = conv_attrs(layer)
    cout_g = Cout // G
    K_g = Fh * Fw * cin_g
    if max(sh, sw, dh, dw) > 255:
        raise CompileError(f"layer {layer.name!r}: strides and dilations above 255 do not fit the "
                           f"windowed GEMM")
    chunks = [(c0, min(R, cin_g - c0)) for c0 in range(0, cin_g, R)]
    kmax = chunks[0][1]
    fw_b = min(Fw, RS_SPAD // kmax, w_half // kmax)
    fh_max = min(Fh, R, w_half // (fw_b * kmax))
    nt = math.ceil(cout_g / C)

    def streamed_lines(hb, fh_n):
        """Input rows a streamed GEMM of ``fh_n`` filter rows loads: one filter row reads
        only every ``sh``-th row (loaded packed, the GEMM's stride 1)."""
        return hb if fh_n == 1 else window_lines(hb, fh_n, sh, dh)

    def fits(hb, wb, resident, fh_b, fw_b):
        if resident:
            return (window_lines(hb, fh_b, sh, dh) <= L and hb * wb <= p_half and
                    len(chunks) * window_lines(hb, Fh, sh, dh) * window_lines(wb, Fw, sw, dw) <= i_half)
        lines = streamed_lines(hb, fh_b)
        return lines <= L and hb * wb <= p_half and lines * window_lines(wb, fw_b, sw, dw) <= i_half

    def seg_fits(hb, ow, segs, fw_b):
        """A streamed tile of ``hb`` output rows, each cut into ``segs`` segments of ``ow``
        output columns (one filter row per GEMM) fits: ``hb * segs`` PE columns and ifmap
        lines, one segment each."""
        v = hb * segs
        return v <= min(C, L) and v * ow <= p_half and v * window_lines(ow, fw_b, sw, dw) <= i_half

    def column_block(hb, res, fh_b, fw_b):
        """The tile shape of ``hb`` output rows in column blocks of equal width (the halo
        columns of neighbouring blocks loaded twice), as wide as fits; None if none does."""
        wb = next((wb for wb in range(min(Wo, p_half // hb), 0, -1) if fits(hb, wb, res, fh_b, fw_b)), 0)
        return (hb, _even_block(Wo, wb), res, 1) if wb else None

    def segmented(fw_b):
        """Streamed tiles whose output rows are cut into segments side by side on the PE
        columns (when ``Ho < cols`` leaves columns idle or a whole-row tile's height wastes
        them): ``(hb, wb, False, segs)`` for every ``segs >= 2`` and block height ``hb``
        with ``hb * segs <= cols``, the blocks as wide as fit (``wb = segs * ow``, blocks
        and segments of about equal width)."""
        shapes = []
        for segs in range(2, min(C, Wo) + 1):
            for hb in {_even_block(Ho, h) for h in range(1, C // segs + 1)}:
                ow = next((ow for ow in range(ceil_div(Wo, segs), 0, -1) if seg_fits(hb, ow, segs, fw_b)), 0)
                if ow:   # blocks of equal width, segs segments of equal width each
                    shapes.append((hb, segs * ceil_div(Wo, segs * ceil_div(Wo, segs * ow)), False, segs))
        return shapes

    def tile_shapes(fh_b, fw_b):
        """Candidate (output rows, output columns, resident, segments) of a tile: whole
        output rows, as many as fit (resident first; blocks of equal height), else one
        output row in column blocks; when whole rows leave PE columns idle, more output
        rows (up to ``min(cols, Ho)``, in blocks of equal height) in column blocks,
        resident and streamed; with one filter row, the segmented tiles
        (:func:`segmented`). Empty if nothing fits."""
        hb_full = min(C, Ho)
        whole = next(((_even_block(Ho, hb), Wo, res, 1) for res in (True, False)
                      for hb in range(hb_full, 0, -1) if fits(hb, Wo, res, fh_b, fw_b)),
                     None) or column_block(1, False, fh_b, fw_b)
        shapes = [whole] if whole else []
        for res in (True, False):
            for hb in sorted({_even_block(Ho, hb) for hb in range(hb_full, whole[0] if whole else 0, -1)},
                             reverse=True):
                shapes += [sh] if (sh := column_block(hb, res, fh_b, fw_b)) else []
        # segmented tiles that use fewer PE columns than whole rows would only be shorter
        return shapes + [s for s in (segmented(fw_b) if fh_b == 1 else [])
                         if not whole or s[0] * s[3] >= min(whole[0], Ho)]

    def weight_loads(g, c0, k_len, fh0, fh_n, fw0, fw_n, j, n_len):
        """LOADs of the weight rows (fh, fw, c) of a filter block, ``n_len`` channels each:
        one per filter row, or one for the block when it spans whole filter rows, or one
        per tap when a tap's stride (``cin_g * cout_g``) exceeds the LOAD's stride field."""
        base = alloc.weights + g * K_g * cout_g + j * C
        tap = cin_g * cout_g
        if tap > _MAX_STRIDE2:
            runs = [(fh, fw, 1) for fh in range(fh0, fh0 + fh_n) for fw in range(fw0, fw0 + fw_n)]
        elif fw_n == Fw:
            runs = [(fh0, 0, fh_n * Fw)]
        else:
            runs = [(fh, fw0, fw_n) for fh in range(fh0, fh0 + fh_n)]
        loads, row = [], 0
        for fh, fw, n in runs:
            loads.append(load(BaseReg.STATIC, base + ((fh * Fw + fw) * cin_g + c0) * cout_g,
                              n_len, n1=k_len, s1=cout_g, bs1=1, n2=n, s2=tap if n > 1 else 0,
                              bs2=k_len, buf_row=row))
            row += n * k_len
        return loads

    def filter_blocks(fh_b, fw_b):
        """``(first filter row, rows, first filter column, columns)`` of each GEMM's block."""
        return [(fh0, min(fh_b, Fh - fh0), fw0, min(fw_b, Fw - fw0))
                for fh0 in range(0, Fh, fh_b) for fw0 in range(0, Fw, fw_b)]

    def block_loads_of(resident, img, g, y0, x0, hbt, wbt):
        """Resident mode: the LOADs of a tile's ifmap block, every chunk's input rows."""
        nyf, wpf = window_lines(hbt, Fh, sh, dh), window_lines(wbt, Fw, sw, dw)
        return [raw_rows_load(layer, alloc.src, g * cin_g + c0, kl, img, y0, nyf, x0, wpf, i * nyf * wpf)
                for i, (c0, kl) in enumerate(chunks)] if resident else []

    def shared_window(fblocks, hbt, ow, segs):
        """Whether a streamed tile's GEMMs of one chunk share one ifmap window (one ifmap
        group): one filter row each, whole filter rows (so they are consecutive), the
        window's ``(hbt-1)*stride + (Fh-1)*dil + 1`` unpacked input rows fit the ifmap half,
        and, with segments, stride 1 (a segment's rows then follow at a fixed pitch)."""
        return (all(fh_n == 1 and fw_n == Fw for _, fh_n, _, fw_n in fblocks) and (segs == 1 or sh == 1)
                and segs * window_lines(hbt, Fh, sh, dh) * window_lines(ow, Fw, sw, dw) <= i_half)

    def row_classes(fblocks, hbt, ow, segs):
        """Streamed segmented tiles at a stride (``segs > 1``, ``sh > 1``, one whole filter
        row per GEMM): the filter rows grouped by the input rows they read. Filter row ``fh``
        reads input rows ``y0 + fh*dil + i*sh``, so the rows with the same ``fh*dil % sh``
        (the same *class*) read one set of every ``sh``-th input row, offset by ``fh*dil //
        sh`` rows: a chunk's GEMMs of a class share one packed window (``hbt`` rows plus the
        largest offset, one LOAD per segment), each from line ``offset*segs``.

        The windows (chunk by chunk, class by class) go into ifmap groups of as many
        consecutive windows as fit the ifmap half together, counted from the last one (the
        first group is the one left short): a group then holds several GEMMs of every tile
        of a psum block, so that the tiles' last GEMMs, and their STOREs (one per output
        row), do not come all at once at the block's end (the STORE queue fills and the
        in-order fetch stops until the STOREs drain; ResNet-18 conv5_x on 16x16 lost about
        2,900 cycles per psum block with one window per group).

        Returns ``(classes, place)``: ``classes`` a list of ``(class, [(offset, filter
        block), ...])``, ``place[(chunk, class index)] = (group, first row of the window in
        the group)``; None when the tile does not qualify or a class's window does not fit
        the ifmap half."""
        if segs == 1 or sh == 1 or not all(fh_n == 1 and fw_n == Fw for _, fh_n, _, fw_n in fblocks):
            return None
        pitch = window_lines(ow, Fw, sw, dw)
        by_class = {}
        for fb in fblocks:
            by_class.setdefault(fb[0] * dh % sh, []).append((fb[0] * dh // sh, fb))
        classes = sorted(by_class.items(), key=lambda c: (len(c[1]), c[0]))   # the most GEMMs last
        sizes = [segs * (hbt + members[-1][0]) * pitch for _, members in classes]
        if max(sizes) > i_half or len(classes) == len(fblocks):   # no window shared
            return None
        windows = [(i, ci) for i in range(len(chunks)) for ci in range(len(classes))]
        place, group, used = {}, 0, i_half
        for w in reversed(windows):          # from the last window: the last group is full
            size = sizes[w[1]]
            if used + size > i_half:
                group, used = group + 1, 0
            place[w] = [group, used]
            used += size
        groups = {}
        for w in windows:                    # rows in window order inside each group
            groups.setdefault(place[w][0], []).append(w)
        for members in groups.values():
            row = 0
            for w in members:
                place[w] = (group - place[w][0], row)
                row += sizes[w[1]]
        return classes, place

    def uses_classes(fblocks, resident, hbt, wbt, segs):
        """:func:`row_classes` of a streamed tile of ``hbt x wbt`` outputs that does not
        share one unpacked window (:func:`shared_window`); None otherwise."""
        ow = ceil_div(wbt, segs)
        if resident or shared_window(fblocks, hbt, ow, segs):
            return None
        return row_classes(fblocks, hbt, ow, segs)

    def tile_gemms(fblocks, resident, img, g, y0, x0, hbt, wbt, j, n_len, segs=1):
        """The accumulating GEMMs of one output tile, one per (chunk, filter block).

        Streamed, each GEMM loads its window's rows (one filter row: every ``stride``-th
        row, packed, the GEMM's stride 1), or, when :func:`shared_window`, the chunk's GEMMs
        share one window of unpacked rows (the GEMM's stride ``stride``, filter row ``fh``
        from the window's row ``fh*dil``), or, segmented at a stride (:func:`row_classes`),
        the GEMMs of a class of filter rows share one packed window. With ``segs > 1`` (one
        filter row per GEMM) the tile's ``hbt`` output rows are cut into ``segs`` segments
        of ``ow = ceil(wbt / segs)`` columns: segment ``h`` of output row ``y`` is the GEMM's
        output row ``y*segs + h``, its ifmap line the segment's own input columns (one LOAD
        per segment, each input row of the window ``segs`` lines of ``row_pitch`` pixels,
        segment by segment), its psum rows ``(y*segs + h) * ow ..``, so output pixel ``(y,
        x)`` is psum row ``y * segs*ow + x``."""
        nyf, wpf = window_lines(hbt, Fh, sh, dh), window_lines(wbt, Fw, sw, dw)
        ow = ceil_div(wbt, segs)
        shared = not resident and shared_window(fblocks, hbt, ow, segs)
        classes = uses_classes(fblocks, resident, hbt, wbt, segs)
        if classes:
            classes, place = classes
            # GEMMs class by class: (class index, offset, filter block)
            order = [(ci, q, fb) for ci, (_, members) in enumerate(classes) for q, fb in members]
        else:
            order = [(None, None, fb) for fb in fblocks]
        gemms, group_first = [], {}
        for i, (c0, k_len) in enumerate(chunks):
            for ci, q, (fh0, fh_n, fw0, fw_n) in order:
                win = Window(win_h=fh_n, win_w=fw_n, stride_h=sh, stride_w=sw, dil_h=dh,
                             dil_w=dw, out_h=hbt * segs, out_w=ow)
                group = None if resident else len(gemms)
                load_it, base = True, 0
                if resident:
                    win.row_pitch = wpf
                    ifmap, row = [], i * nyf * wpf + fh0 * dh * wpf + fw0 * dw
                else:
                    win.row_pitch = pitch = window_lines(ow, fw_n, sw, dw)
                    ny, y, sy, row = streamed_lines(hbt, fh_n), y0 + fh0 * dh, sh if fh_n == 1 else 1, 0
                    if shared:
                        group, row = i, fh0 * dh * segs * pitch
                        ny, y, sy = nyf, y0, 1
                        load_it = not fh0
                    elif classes:
                        cls, members = classes[ci]
                        group, base = place[(i, ci)]
                        row = base + q * segs * pitch
                        ny, y = hbt + members[-1][0], y0 + cls
                        load_it = (q, (fh0, fh_n, fw0, fw_n)) == members[0]
                        win.stride_h = 1
                    elif fh_n == 1:
                        win.stride_h = 1
                    # with row classes, a segment's line holds only the input columns its
                    # stored outputs read (the last segment's columns past the block's end
                    # compute from whatever the buffer holds there, and are not stored)
                    ifmap = [window_load(alloc.src, layer.in_shape, img, g * cin_g + c0, k_len, y,
                                         x0 + h * ow * sw + fw0 * dw, ny, window_lines(
                                             max(1, min(ow, wbt - h * ow)), fw_n, sw, dw) if classes else pitch,
                                         sy=sy, bs2=segs * pitch, buf_row=base + h * pitch,
                                         pad_value=int(layer.in_zp))
                             for h in range(segs)] if load_it else []
                op = GemmOp(k_len=k_len, n_len=n_len, ifmap=ifmap, ifmap_row=row,
                            weight=weight_loads(g, c0, k_len, fh0, fh_n, fw0, fw_n, j, n_len),
                            window=win, ifmap_group=group)
                if classes and group in group_first:
                    # a group's first GEMM carries the LOADs of all its windows
                    group_first[group].ifmap += ifmap
                    op.ifmap = []
                group_first.setdefault(group, op)
                gemms.append(op)
        return gemms

    def cost(fh_b, fw_b, shape):
        """Estimated cycles of the layer (:func:`layer_cycles`, every tile like the first):
        more filter rows per GEMM mean fewer GEMMs but fewer channel sets (more passes),
        more lines per step and longer weight loads."""
        hb, wb, resident, segs = shape
        hbt, wbt = min(hb, Ho), min(wb, Wo)
        ops = tile_gemms(filter_blocks(fh_b, fw_b), resident, 0, 0, -pt, -pl, hbt, wbt, 0,
                         min(C, cout_g), segs)
        pb = min(psum_tiles(hbt, wbt, resident, segs), nt)
        # a psum block's tiles run each GEMM's window in turn, the first one loading it
        ops = [o for op in ops for o in [op] + [dataclasses.replace(op, ifmap=[])] * (pb - 1)]
        staggered = uses_classes(filter_blocks(fh_b, fw_b), resident, hbt, wbt, segs) is not None
        return layer_cycles(ops, config, block_loads_of(resident, 0, 0, -pt, -pl, hbt, wbt),
                            tiles=ceil_div(nt, pb), blocks=batch * G * math.ceil(Ho / hb) * math.ceil(Wo / wb),
                            group_loads=max(1, config.queue_depth // 2 - staggered))

    def psum_rows_of(hb, wb, segs):
        """Psum rows of a tile of ``hb`` output rows x ``wb`` columns in ``segs`` segments."""
        return hb * segs * ceil_div(wb, segs)

    def psum_tiles(hb, wb, resident, segs=1):
        """Output tiles per psum block (:func:`~celosia.sw.compiler.lower_gemm.psum_block_tiles`):
        streamed, the tiles of a block share each GEMM's ifmap window, loaded once."""
        return 1 if resident else psum_block_tiles(psum_rows_of(hb, wb, segs), config,
                                                   nt if G > 1 else None)

    # The filter-row block with the lowest estimated cycles among those that fit; if none
    # does, shrink the filter columns until one output pixel's window fits the ifmap half.
    options = [(fh_b, fw_b, shape) for fh_b in range(1, fh_max + 1) for shape in tile_shapes(fh_b, fw_b)]
    while not options and fw_b > 1:
        fw_b -= 1
        options = [(1, fw_b, shape) for shape in tile_shapes(1, fw_b)]
    if not options:
        raise CompileError(f"layer {layer.name!r}: not even one input pixel fits the rs array's "
                           f"ifmap buffer half (ifmap_rows={config.ifmap_rows}); increase ifmap_rows")
    fh_b, fw_b, (hb, wb, resident, segs) = _pick(options, key=lambda o: (cost(*o), not o[2][2]))
    fblocks = filter_blocks(fh_b, fw_b)

    pb = psum_tiles(min(hb, Ho), min(wb, Wo), resident, segs)
    n_pb = ceil_div(nt, pb)
    tiles = []
    for block_id, (img, g, ho0, hbt, wo0, wbt) in enumerate(conv_blocks(batch, G, Ho, Wo, hb, wb)):
        y0, x0 = ho0 * sh - pt, wo0 * sw - pl
        block_loads = block_loads_of(resident, img, g, y0, x0, hbt, wbt)
        for j in range(nt):
            n_len = min(C, cout_g - j * C)
            gemms = tile_gemms(fblocks, resident, img, g, y0, x0, hbt, wbt, j, n_len, segs)
            offset = ((img * Ho + ho0) * Wo + wo0) * Cout + g * cout_g + j * C
            st = store(layer, alloc.dst, offset, Cout, n_len)
            m_len = psum_rows_of(hbt, wbt, segs)
            if wbt < Wo or m_len > hbt * wbt:
                # a block narrower than the feature map, or segments with columns past its
                # end: one STORE per output row, of its wbt pixels
                st.runs, st.run_stride = hbt, Wo * Cout
                st.run_pitch, st.run_len = m_len // hbt, wbt
            tiles.append(OutTile(m_len=m_len, ops=gemms, store=st,
                                 param_row=g * nt + j, block=block_id,
                                 block_loads=block_loads,
                                 psum_block=None if pb == 1 else block_id * n_pb + j // pb))
    # with row classes (a psum block's GEMMs in ifmap groups of several windows), weight
    # groups of one LOAD less than half the queue: measured on ResNet-18's stride-2 3x3
    # layers on 16x16, conv5_x 301,181 -> 300,436 cycles, conv3_x 253,393 -> 248,523
    # (conv4_x the same; groups of 5 or 6: 300,640 / 300,359 and 265,112 / 247,744)
    staggered = uses_classes(fblocks, resident, min(hb, Ho), min(wb, Wo), segs) is not None
    return _units(tiles, alloc.params, resident, config, layer, staggered)


def lower_fc(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
    """A fully connected layer on the rs array: ``rows``-feature lines as filter rows,
    samples as output rows (see the module docstring)."""
    R, C, L = config.rows, config.cols, config.rs_lines
    i_half, p_half, w_half = config.ifmap_rows // 2, config.psum_rows // 2, config.weight_rows // 2
    K, N = layer.w.shape
    src_reg, src_off = alloc.src
    full, rem = divmod(K, R)
    nlines = full + (rem > 0)
    resident = batch * nlines <= i_half

    def plan(lb):
        """(GEMM line groups, samples per tile) with ``lb`` lines per GEMM."""
        kgroups = [(l0, min(lb, full - l0), R) for l0 in range(0, full, lb)] + ([(full, 1, rem)] if rem else [])

        def ok(hb):
            stride = nlines if resident else lb
            return hb == 1 or (stride <= 255 and (hb - 1) * stride + lb <= min(L, i_half))

        return kgroups, next(hb for hb in range(min(C, batch, p_half), 0, -1) if ok(hb))

    def tile_gemms(kgroups, b0, hbt, j, n_len):
        """The accumulating GEMMs of the output tile of samples ``b0 .. b0+hbt-1`` and
        channels ``j*cols ..``: one per line group."""
        gemms = []
        for l0, nl, k_len in kgroups:
            stride = (nlines if resident else nl) if hbt > 1 else 1
            win = Window(win_h=nl, win_w=1, stride_h=stride, stride_w=1, dil_h=1, dil_w=1,
                         out_h=hbt, out_w=1, row_pitch=1)
            weight = [load(BaseReg.STATIC, alloc.weights + l0 * R * N + j * C, n_len,
                           n1=nl * k_len, s1=N, bs1=1)]
            ifmap = [] if resident else [
                load(src_reg, src_off + b0 * K + l0 * R, k_len, n1=nl, s1=R, bs1=1, n2=hbt,
                     s2=K, bs2=nl, buf_row=0)]
            gemms.append(GemmOp(k_len=k_len, n_len=n_len, weight=weight, ifmap=ifmap,
                                ifmap_row=b0 * nlines + l0 if resident else 0, window=win))
        return gemms

    block_loads = []
    if resident:
        if full:
            block_loads.append(load(src_reg, src_off, R, n1=full, s1=R, bs1=1, n2=batch, s2=K,
                                    bs2=nlines, buf_row=0))
        if rem:
            block_loads.append(load(src_reg, src_off + full * R, rem, n1=batch, s1=K,
                                    bs1=nlines, buf_row=full))
    n_tiles = math.ceil(N / C)

    def cost(lb):
        """Estimated cycles (:func:`layer_cycles`, every tile like the first): more lines
        per GEMM mean fewer GEMMs but fewer channel sets, so more passes that each reload
        the lines' weights."""
        kgroups, hb = plan(lb)
        ops = tile_gemms(kgroups, 0, hb, 0, min(C, N))
        return layer_cycles(ops, config, block_loads, tiles=math.ceil(batch / hb) * n_tiles)

    # Lines per GEMM: the weight-buffer half holds lb*rows rows; streamed, lb lines must fit
    # the ifmap half.
    lb_max = max(1, min(R, w_half // R, full, i_half if not resident else full))
    lb = _pick(range(1, lb_max + 1), key=cost)
    kgroups, hb = plan(lb)
    if not resident and lb > i_half:
        raise CompileError(f"layer {layer.name!r}: {lb} input lines do not fit the ifmap buffer half "
                           f"(ifmap_rows={config.ifmap_rows})")
    tiles = []
    for b0 in range(0, batch, hb):
        hbt = min(hb, batch - b0)
        for j in range(n_tiles):
            n_len = min(C, N - j * C)
            tiles.append(OutTile(m_len=hbt, ops=tile_gemms(kgroups, b0, hbt, j, n_len),
                                 store=store(layer, alloc.dst, b0 * N + j * C, N, n_len),
                                 param_row=j, block=0, block_loads=block_loads))
    return split_units(tiles, alloc.params, resident, config, layer)


def mapping(layer: QLayer, units: list[Unit], config: AccelConfig) -> dict:
    """The report's ``mapping`` of a GEMM layer on the rs array: its logical PE set and
    what one GEMM of it runs on the physical array."""
    win = units[0].tiles[0].ops[0].window
    if layer.op == "conv":
        logical = f"{layer.w.shape[1]}x{layer.out_shape[0]} filter rows x output rows"
    else:
        logical = f"{math.ceil(layer.w.shape[0] / config.rows)} lines of {config.rows} features x samples"
    sets = config.rows // win.win_h
    segs = max(1, units[0].tiles[0].store.run_pitch // win.out_w)   # segmented rows (lower_conv)
    seg = f": {win.out_h // segs} output rows x {segs} segments" if segs > 1 else ""
    return {"mapping": f"rs: logical set {logical}, per GEMM {win.win_h}x{win.out_h}{seg} "
                       f"({win.win_w} filter columns), {sets} channel set{'s' * (sets > 1)}"}


#: op -> lowering of the layers this family maps.
def fc_block_pitches(batch: int, lines: int) -> tuple[int, int]:
    """``(line pitch, sample pitch)`` of :func:`lower_fc`'s resident input block: input
    channel ``c`` of sample ``b`` is at block row ``b * lines + c // rows``, lane
    ``c % rows`` (``lines = ceil(K / rows)``)."""
    return 1, lines


LOWERINGS = {"fc": lower_fc, "conv": lower_conv}
