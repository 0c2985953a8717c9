"""Verilog generation for a configuration, cached.

Generating Verilog runs Yosys (WebAssembly) and takes seconds to minutes for big
arrays, so the text is cached under the Celosia cache directory, keyed by the
configuration, the RTL sources and the Amaranth version.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import amaranth

from celosia.rtl.config import AccelConfig

__all__ = ["cache_dir", "rtl_fingerprint", "generate", "sim_top_verilog", "accelerator_verilog"]

_RTL_DIR = Path(__file__).resolve().parent.parent / "rtl"


def cache_dir() -> Path:
    """``$CELOSIA_CACHE`` or ``~/.cache/celosia``."""
    path = Path(os.environ.get("CELOSIA_CACHE", Path.home() / ".cache" / "celosia"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def rtl_fingerprint() -> str:
    h = hashlib.sha256(amaranth.__version__.encode())
    for path in sorted(_RTL_DIR.rglob("*.py")):
        h.update(str(path.relative_to(_RTL_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def generate(config: AccelConfig, top: str = "accelerator", instanced: bool = True) -> str:
    """Verilog text of ``top`` (``"accelerator"`` or ``"sim_top"``) for ``config``.

    ``instanced`` (default): the PE array's repeated columns / rows are converted once
    each and instanced (:mod:`celosia.rtl.arrays.blocks`); their modules follow the top's
    text, so the time does not grow with the PE count as a flat netlist's does
    (``instanced=False``: the same circuit written inline, for comparison;
    ``benchmarks/verilog_gen.py``). ``"sim_top"`` also holds the
    DRAM storage as the plain Verilog module ``celosia_dram_storage``
    (:data:`celosia.rtl.dram.DRAM_STORAGE_VERILOG`, appended): an Amaranth memory would
    be written out with one initialisation line per word.
    """
    from amaranth.back import verilog
    from celosia.rtl.dram import DRAM_STORAGE_VERILOG
    from celosia.rtl.top import Accelerator, SimTop

    blocks = {} if instanced else None
    if top == "sim_top":
        text = verilog.convert(SimTop(config, dram_storage="verilog", blocks=blocks),
                               name="celosia_sim_top", emit_src=False)
        extra = [DRAM_STORAGE_VERILOG]
    elif top == "accelerator":
        text = verilog.convert(Accelerator(config, blocks=blocks), name="celosia_accelerator",
                               emit_src=False)
        extra = []
    else:
        raise ValueError(f"top must be 'accelerator' or 'sim_top', not {top!r}")
    # (the blocks were recorded while the top was elaborated)
    parts = [text] + [verilog.convert(block, name=name, emit_src=False)
                      for name, block in (blocks or {}).items()] + extra
    return "\n".join(parts)


def _cached(config: AccelConfig, top: str) -> Path:
    key = f"{top}-{config.digest()}-{rtl_fingerprint()}"
    path = cache_dir() / "verilog" / f"{key}.v"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = generate(config, top)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: parallel test workers may race
    return path


def sim_top_verilog(config: AccelConfig) -> Path:
    """Path of the cached Verilog of ``SimTop`` (accelerator + DRAM model)."""
    return _cached(config, "sim_top")


def accelerator_verilog(config: AccelConfig) -> Path:
    """Path of the cached Verilog of the synthesizable ``Accelerator``."""
    return _cached(config, "accelerator")
