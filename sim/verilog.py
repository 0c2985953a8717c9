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
    """Verilog text of ``top`` (``"accelerator"`` or ``"sim_top"``) for ``config``."""
    from amaranth.back import verilog
    from celosia.rtl.top import Accelerator, SimTop

    cls, name = {"accelerator": (Accelerator, "celosia_accelerator"),
                 "sim_top": (SimTop, "celosia_sim_top")}[top]
    return verilog.convert(cls(config), name=name, emit_src=False)


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
