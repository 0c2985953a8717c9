"""FEIECore (rtl/arrays/feie_core.py) against the FEIE tables of the seed
``/work/shared/seeds/003_22a9a7a7ade5ad2b.txt`` and a NumPy reference.

Cycle numbering in these tests: cycle 0 is the cycle in which the first input
word is accepted; cycle k (k >= 1) is the seed's "CC #k". A psum whose last
product is taken in CC #n is valid on ``out`` in cycle n+1 (registered output),
so "completes in CC #n" is checked as "appears on ``out`` in cycle n+1".
"""

import numpy as np
import pytest

from celosia.rtl.arrays.feie_core import FEIECore
from helpers import pack, simulate

# -- expected values, read off the seed ----------------------------------------------

# Lines 1077-1093 (the complete dense table) and 1164 ("Performing computations on
# dense model requires 16 clock cycles!"): CC #1..#16 read X1..X16, one per cycle.
SEED_DENSE_CYCLES = 16
# Line 718: "The first partial sum is ready after 3 clock cycles."
SEED_FIRST_PSUM_CC = 3
# Completion cycle of psum #n = the CC in which it receives W3 (its last weight).
# Row 1, lines 1080-1085: #1 W3 in CC #3, #2 in CC #4, ..., #6 in CC #8 (line 1085).
# Row 2: line 1093 gives #12 W3 in CC #16; the row-2 rows of the tables (1086-1092)
# are garbled (CC #12 and #13 identical), so #7..#11 follow row 1's one-per-cycle
# pattern ending at #12 in CC #16: #7 in CC #11 ... #11 in CC #15. Line 833: "two
# pipeline stalls to accommodate the input row change" = CC #9 and #10 complete
# nothing (between #6 in CC #8 and #7 in CC #11).
SEED_COMPLETE_CC = {1: 3, 2: 4, 3: 5, 4: 6, 5: 7, 6: 8, 7: 11, 8: 12, 9: 13, 10: 14, 11: 15, 12: 16}
SEED_ROW_STALLS = 2
# Lines 1139-1160: the sparse example, X6..X11 = 0. Lines 1170-1182: with skipping,
# CC #1..#5 read X1..X5, CC #6..#10 read X12..X16 -- 10 cycles (line 1182).
SEED_ZERO_PIXELS = [6, 7, 8, 9, 10, 11]          # 1-based X indices
SEED_SKIP_INPUTS = [1, 2, 3, 4, 5, 12, 13, 14, 15, 16]
SEED_SKIP_CYCLES = 10
# Line 1172: the skipping table has no columns for psums #6 and #7 (all-zero
# windows, line 1157 shows them as 0): they are not computed.
SEED_SKIP_NOT_COMPUTED = [6, 7]


def ref_conv_rows(x, w):
    """Per-row 'valid' 1-D convolution as in the seed (Psum1 = X1*W1 + X2*W2 + X3*W3),
    int32 wrapping; flattened row-major like the core's output index."""
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    f = len(w)
    out = np.stack([np.array([row[j:j + f] @ w for j in range(x.shape[1] - f + 1)]) for row in x])
    return (((out + (1 << 31)) % (1 << 32)) - (1 << 31)).reshape(-1)


def words_of(core, x):
    """The input image (rows x row_width) cut into ``lanes``-wide words, row-major."""
    flat = np.asarray(x).reshape(-1)
    return [flat[i:i + core.lanes] for i in range(0, flat.size, core.lanes)]


async def run_once(ctx, core, w, x, zero_skip, ready_pattern=None, limit=2000):
    """Load ``w``, stream ``x``; returns a dict with the broadcasts ``(cycle, row, col,
    data)``, output beats ``(cycle, index, value)``, ``cycles`` and ``zero_skips``."""
    ctx.set(core.zero_skip, zero_skip)
    ctx.set(core.out.ready, 1)
    for v in w:
        ctx.set(core.wload.valid, 1)
        ctx.set(core.wload.payload, int(v))
        assert ctx.get(core.wload.ready)
        await ctx.tick()
    ctx.set(core.wload.valid, 0)

    words = words_of(core, x)
    i, t, ticks = 0, None, 0
    rec = {"bcast": [], "out": [], "accept": []}
    while True:
        if i < len(words):
            ctx.set(core.pixels.valid, 1)
            ctx.set(core.pixels.payload.as_value(), pack(words[i], 8))
        else:
            ctx.set(core.pixels.valid, 0)
        if ready_pattern is not None:
            ctx.set(core.out.ready, ready_pattern(ticks))
        in_fire = ctx.get(core.pixels.valid) and ctx.get(core.pixels.ready)
        if in_fire and t is None:
            t = 0
        if t is not None:
            if t > 0 and not ctx.get(core.busy):
                break
            if in_fire:
                rec["accept"].append(t)
            if ctx.get(core.bcast):
                rec["bcast"].append((t, ctx.get(core.bcast_row), ctx.get(core.bcast_col),
                                     ctx.get(core.bcast_data)))
            if ctx.get(core.out.valid) and ctx.get(core.out.ready):
                beat = ctx.get(core.out.payload)
                rec["out"].append((t, int(beat.index), int(beat.value)))
        await ctx.tick()
        ticks += 1
        assert ticks < limit, "run did not finish"
        if in_fire:
            i += 1
        if t is not None:
            t += 1
    assert i == len(words)
    rec["cycles"] = ctx.get(core.cycles)
    rec["zero_skips"] = ctx.get(core.zero_skips)
    return rec


def run_sim(core, jobs):
    """Run ``jobs`` (``(w, x, zero_skip[, ready_pattern])`` tuples) back to back on one
    core; returns the list of records."""
    results = []

    async def bench(ctx):
        for job in jobs:
            results.append(await run_once(ctx, core, *job))

    simulate(core, bench)
    return results


def scatter(core, rec):
    """Output beats -> dense output vector (missing indices = 0), asserting no index twice."""
    y = np.zeros(core.n_out, dtype=np.int64)
    seen = set()
    for _, idx, val in rec["out"]:
        assert idx not in seen, f"psum {idx} emitted twice"
        seen.add(idx)
        y[idx] = val
    return y


SEED_W = [3, -2, 5]
SEED_X = np.array([[7, -1, 4, 2, -8, 6, 1, -3], [5, 9, -6, 2, 11, -4, 3, 1]])


def seed_sparse_x():
    x = SEED_X.copy().reshape(-1)
    for n in SEED_ZERO_PIXELS:
        x[n - 1] = 0
    return x.reshape(2, 8)


# -- (a), (b), (c): the dense seed example -----------------------------------------

def test_dense_seed_timing():
    core = FEIECore(n_pe=3, filter_width=3, row_width=8, n_rows=2, lanes=8)
    rec, = run_sim(core, [(SEED_W, SEED_X, 0)])
    # (a) 16 cycles, one pixel Xk per CC #k (lines 1077-1093, 1164).
    assert rec["cycles"] == SEED_DENSE_CYCLES
    flat = SEED_X.reshape(-1)
    assert [b[0] for b in rec["bcast"]] == list(range(1, SEED_DENSE_CYCLES + 1))
    assert [b[3] for b in rec["bcast"]] == list(flat)
    assert [(b[1], b[2]) for b in rec["bcast"]] == [(k // 8, k % 8) for k in range(16)]
    # (b) the first psum is ready after 3 clock cycles (line 718).
    first_t, first_idx, _ = rec["out"][0]
    assert first_idx == 0 and first_t - 1 == SEED_FIRST_PSUM_CC
    # (c) each psum completes in the CC the table gives (1-based psum numbers).
    complete = {idx + 1: t - 1 for t, idx, _ in rec["out"]}
    assert complete == SEED_COMPLETE_CC
    # ... so the row change costs exactly the two stall cycles of line 833: no psum
    # completes in CC #9, #10, and they are not extra cycles (still 16 in all).
    ccs = sorted(complete.values())
    idle = [cc for cc in range(SEED_FIRST_PSUM_CC, SEED_DENSE_CYCLES + 1) if cc not in ccs]
    assert len(idle) == SEED_ROW_STALLS and idle == [9, 10]
    assert complete[7] - complete[6] == SEED_ROW_STALLS + 1
    assert rec["zero_skips"] == 0
    assert np.array_equal(scatter(core, rec), ref_conv_rows(SEED_X, SEED_W))


# -- (d): the sparse seed example ---------------------------------------------------

def test_sparse_seed_zero_skip():
    core = FEIECore(n_pe=3, filter_width=3, row_width=8, n_rows=2, lanes=8)
    x = seed_sparse_x()
    skip, dense = run_sim(core, [(SEED_W, x, 1), (SEED_W, x, 0)])
    ref = ref_conv_rows(x, SEED_W)
    flat = x.reshape(-1)
    # With skipping: 10 cycles reading X1..X5, X12..X16 (lines 1170-1182).
    assert skip["cycles"] == SEED_SKIP_CYCLES
    assert [b[0] for b in skip["bcast"]] == list(range(1, SEED_SKIP_CYCLES + 1))
    assert [b[3] for b in skip["bcast"]] == [flat[n - 1] for n in SEED_SKIP_INPUTS]
    assert [b[1] * 8 + b[2] + 1 for b in skip["bcast"]] == SEED_SKIP_INPUTS
    assert skip["zero_skips"] == len(SEED_ZERO_PIXELS)
    # psums #6 and #7 (all-zero windows) are not computed (line 1172) ...
    emitted = sorted(idx + 1 for _, idx, _ in skip["out"])
    assert emitted == [n for n in range(1, 13) if n not in SEED_SKIP_NOT_COMPUTED]
    # ... and the result equals the dense one (missing psums are 0).
    assert np.array_equal(scatter(core, skip), ref)
    # Without skipping the same input takes the dense 16 cycles (lines 1139-1164).
    assert dense["cycles"] == SEED_DENSE_CYCLES and dense["zero_skips"] == 0
    assert np.array_equal(scatter(core, dense), ref)
    assert sorted(idx for _, idx, _ in dense["out"]) == list(range(12))


# -- (e): random data against NumPy ---------------------------------------------------

CONFIGS = [
    dict(n_pe=3, filter_width=3, row_width=8, n_rows=2, lanes=8),   # the seed's
    dict(n_pe=4, filter_width=3, row_width=16, n_rows=3, lanes=8),  # more PEs than taps
    dict(n_pe=5, filter_width=5, row_width=12, n_rows=2, lanes=4),  # words < row
    dict(n_pe=2, filter_width=2, row_width=6, n_rows=2, lanes=1),   # plain pixel stream
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "p{n_pe}f{filter_width}w{row_width}r{n_rows}l{lanes}".format(**c))
def test_random_against_numpy(cfg):
    core = FEIECore(**cfg)
    jobs, refs = [], []
    for seed in range(3):
        rng = np.random.default_rng(1000 * seed + cfg["row_width"])
        w = rng.integers(-128, 128, cfg["filter_width"])
        x = rng.integers(-128, 128, (cfg["n_rows"], cfg["row_width"]))
        xs = np.where(rng.random(x.shape) < 0.5, 0, x)        # ReLU-like sparsity
        if seed == 0:
            xs[0, :] = 0                                      # an all-zero first row
        for data in (x, xs):
            for zs in (0, 1):
                jobs.append((w, data, zs))
                refs.append((data, w, zs))
    # one extra sparse run under random output backpressure
    rng = np.random.default_rng(7)
    bp = rng.random(4096) < 0.5
    jobs.append((jobs[-1][0], jobs[-1][1], 1, lambda k: int(bp[k % 4096])))
    refs.append(refs[-1])
    jobs.append((jobs[-3][0], jobs[-3][1], 0, lambda k: int(bp[(k + 17) % 4096])))
    refs.append(refs[-3])

    recs = run_sim(core, jobs)
    n_pix = cfg["n_rows"] * cfg["row_width"]
    for rec, (data, w, zs), job in zip(recs, refs, jobs):
        ref = ref_conv_rows(data, w)
        assert np.array_equal(scatter(core, rec), ref)
        n_zero = int(np.count_nonzero(np.asarray(data) == 0))
        if not zs:
            # dense: every psum exactly once, one pixel per cycle
            assert sorted(i for _, i, _ in rec["out"]) == list(range(core.n_out))
            assert len(rec["bcast"]) == n_pix and rec["zero_skips"] == 0
            if len(job) == 3:
                assert rec["cycles"] == n_pix
        else:
            # skipping: only the non-zero pixels are broadcast
            assert rec["zero_skips"] == n_zero
            assert len(rec["bcast"]) == n_pix - n_zero
            assert all(b[3] != 0 for b in rec["bcast"])
            if len(job) == 3:
                # Every run cycle broadcasts, except at most one per all-zero word (it
                # still takes its stream beat) and cycles in which the single output
                # port is busy (sparse runs can complete more than one psum per
                # broadcast, and the PE queues then stall the broadcast).
                flat = np.asarray(data).reshape(-1)
                zero_words = sum(1 for k in range(0, n_pix, core.lanes) if not flat[k:k + core.lanes].any())
                bc = {b[0] for b in rec["bcast"]}
                outs = {o[0] for o in rec["out"]}
                idle = [t for t in range(1, rec["cycles"] + 1) if t not in bc and t not in outs]
                assert len(idle) <= zero_words
                if bc:
                    assert max(bc) <= rec["cycles"] <= max(bc) + zero_words
        # output indices appear in increasing order when the output never stalls
        if len(job) == 3 and not zs:
            assert [i for _, i, _ in rec["out"]] == list(range(core.n_out))
