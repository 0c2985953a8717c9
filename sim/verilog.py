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


def generate(config: AccelConfig, top: str = "accelerator") -> str:
    """Verilog text of ``top`` (``"accelerator"`` or ``"sim_top"``) for ``config``.

    ``"sim_top"`` holds the DRAM storage as the plain Verilog module
    ``celosia_dram_storage`` (:data:`celosia.rtl.dram.DRAM_STORAGE_VERILOG`, appended):
    an Amaranth memory would be written out with one initialisation line per word.
    """
    from amaranth.back import verilog
    from celosia.rtl.dram import DRAM_STORAGE_VERILOG
    from celosia.rtl.top import Accelerator, SimTop

    if top == "sim_top":
        text = verilog.convert(SimTop(config, dram_storage="verilog"), name="celosia_sim_top",
                               emit_src=False)
        return text + "\n" + DRAM_STORAGE_VERILOG
    if top == "accelerator":
        return verilog.convert(Accelerator(config), name="celosia_accelerator", emit_src=False)
    raise ValueError(f"top must be 'accelerator' or 'sim_top', not {top!r}")


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
