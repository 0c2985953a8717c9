"""The windowed GEMM of rtl/isa.py, one MAC at a time: the reference of the rs engine tests
and of the ISA simulator's tests (``tests/conftest.py`` puts this folder on ``sys.path``)."""


def wrap32(v):
    return ((int(v) + (1 << 31)) % (1 << 32)) - (1 << 31)


def ref_window(psum, ifmap, weight, d):
    """Apply one windowed GEMM to ``psum`` in place, one MAC at a time."""
    for e in range(d["out_h"]):
        for x in range(d["out_w"]):
            row = d["psum_row"] + e * d["out_w"] + x
            for n in range(d["n_len"]):
                acc = int(psum[row, n]) if d["accumulate"] else 0
                for fh in range(d["win_h"]):
                    for fw in range(d["win_w"]):
                        src = (d["ifmap_row"] + (e * d["stride_h"] + fh * d["dil_h"]) * d["row_pitch"]
                               + x * d["stride_w"] + fw * d["dil_w"])
                        for c in range(d["k_len"]):
                            wrow = d["weight_row"] + (fh * d["win_w"] + fw) * d["k_len"] + c
                            acc += int(ifmap[src, c]) * int(weight[wrow, n])
                psum[row, n] = wrap32(acc)
