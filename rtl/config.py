"""The accelerator configuration: one frozen dataclass drives RTL, compiler, driver and docs.

Every field has a documented range (``RANGES``), and a field listed in ``CHOICES``
(``bus_bits``: 64, 128, 256) only the values listed there; a config outside them fails
at construction with a :class:`ConfigError` naming the field, the value and the range
or the allowed values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

from celosia.errors import ConfigError
#: Dataflows of the compute engine, from the registry (rtl/dataflows.py, docs/dataflows.md).
from celosia.rtl.dataflows import DATAFLOWS

__all__ = ["AccelConfig", "ConfigError", "ceil_div", "RANGES", "CHOICES", "BUS_WIDTHS", "DATAFLOWS",
           "check_config", "parse_array"]



#: Entries of one bank of the ``rs`` array's filter scratchpad (one per PE row, int8;
#: two banks, the next pass's filter row loads into the other): a GEMM's
#: ``win_w * k_len`` must fit. 224 is Eyeriss's filter spad (Chen et al., JSSC 2017).
RS_SPAD = 224

#: Most kernel taps along the width (``win_w``) of one GEMM on the broadcast FEIE engine
#: (rtl/arrays/feie.py): each column keeps ``FEIE_TAPS x rows`` weights; the compiler splits
#: wider kernels into several accumulating GEMMs.
FEIE_TAPS = 3

#: DRAM bus widths in bits (``bus_bits``): 64 as in the FEIE paper, 128 and 256.
BUS_WIDTHS = (64, 128, 256)

#: field -> (min, max, description). Single source for validation, CLI help and docs.
#: A field in :data:`CHOICES` takes only the values listed there (within its range).
RANGES: dict[str, tuple[int, int, str]] = {
    "rows":            (1, 64,       "PE array rows (reduction dimension K for ws)"),
    "cols":            (1, 64,       "PE array columns (output channels N for ws)"),
    "act_bits":        (8, 8,        "activation bit width"),
    "weight_bits":     (8, 8,        "weight bit width"),
    "acc_bits":        (32, 32,      "accumulator bit width"),
    "ifmap_rows":      (2, 65536,    "ifmap buffer depth in rows of `rows` bytes (both halves)"),
    "weight_rows":     (2, 65536,    "weight buffer depth in rows of `cols` bytes (both halves)"),
    "psum_rows":       (2, 65536,    "psum buffer depth in rows of `cols` int32 (both halves)"),
    "param_rows":      (2, 4096,     "PPU parameter buffer depth in groups of `cols` channels x 9 bytes (`param_rows * cols` <= 65536)"),
    "bus_bits":        (min(BUS_WIDTHS), max(BUS_WIDTHS),
                        "DRAM bus width in bits: one bus word per request"),
    "dram_bytes":      (1024, 1 << 28, "simulated DRAM size in bytes (multiple of `bus_bits / 8`)"),
    "dram_latency":    (1, 64,       "simulated DRAM read latency in cycles"),
    "dram_bytes_per_cycle": (1, max(BUS_WIDTHS) // 8,
                             "simulated DRAM bandwidth in bytes per cycle (at most `bus_bits / 8`)"),
    "queue_depth":     (2, 64,       "instruction queue depth (LOAD / COMPUTE / STORE)"),
    "ppu_lanes":       (1, 32,       "PPU lanes: output channels the STORE engine requantizes per cycle "
                                     "(at most `bus_bits / 8` and at most `cols`; any value, no power of "
                                     "two needed; each lane costs a PPU's multiplier)"),
    "feie_read_ports": (1, 2,     "ifmap buffer read ports of the `feie` engine: up to that many pixel "
                                  "reads per cycle, for different groups (2: a second read port, a "
                                  "replicated or true-dual-port RAM; ignored by the other dataflows)"),
    "feie_write_ports": (1, 2,    "psum buffer write ports of the `feie` engine: up to that many outputs "
                                  "written (accumulated) per cycle, of different groups or a group's next two (2: a second "
                                  "psum bank and accumulate read port; ignored by the other dataflows)"),
}

#: field -> the values it may take (a subset of its :data:`RANGES` range).
CHOICES: dict[str, tuple[int, ...]] = {"bus_bits": BUS_WIDTHS}


@dataclass(frozen=True)
class AccelConfig:
    """One generated accelerator.

    The DRAM bus is ``bus_bits`` wide (64 by default, as in the FEIE paper; 128 or
    256): every bus request moves one word of :attr:`bus_bytes` bytes. The DRAM
    model's bandwidth (``dram_bytes_per_cycle``, at most a word per cycle) and
    latency are separate fields.
    """

    rows: int = 8
    cols: int = 8
    dataflow: str = "ws"
    act_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    ifmap_rows: int = 1024
    weight_rows: int = 1024
    psum_rows: int = 512
    param_rows: int = 64
    bus_bits: int = 64
    dram_bytes: int = 1 << 20
    dram_latency: int = 8
    dram_bytes_per_cycle: int = 8
    queue_depth: int = 8
    ppu_lanes: int = 1
    feie_read_ports: int = 2
    feie_write_ports: int = 2

    def __post_init__(self):
        for name, (lo, hi, what) in RANGES.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} ({what}) must be an integer, not {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(f"{name} ({what}) must be {lo}..{hi}, not {value}")
            if name in CHOICES and value not in CHOICES[name]:
                raise ConfigError(f"{name} ({what}) must be one of "
                                  f"{', '.join(map(str, CHOICES[name]))}, not {value}")
        if self.dataflow not in DATAFLOWS:
            raise ConfigError(
                f"dataflow must be one of {', '.join(DATAFLOWS)}, not {self.dataflow!r}")
        if self.dram_bytes % self.bus_bytes:
            raise ConfigError(f"dram_bytes must be a multiple of the bus word ({self.bus_bytes} "
                              f"bytes at bus_bits = {self.bus_bits}), not {self.dram_bytes}")
        if self.dram_bytes_per_cycle > self.bus_bytes:
            raise ConfigError(f"dram_bytes_per_cycle must be at most a bus word per cycle "
                              f"({self.bus_bytes} at bus_bits = {self.bus_bits}), not "
                              f"{self.dram_bytes_per_cycle}")
        if self.ppu_lanes > min(self.bus_bytes, self.cols):
            raise ConfigError(f"ppu_lanes must be at most the bus word ({self.bus_bytes} bytes at "
                              f"bus_bits = {self.bus_bits}) and at most cols ({self.cols}), not "
                              f"{self.ppu_lanes}")
        for name in ("ifmap_rows", "weight_rows", "psum_rows", "param_rows"):
            if getattr(self, name) % 2:
                raise ConfigError(f"{name} must be even (two halves), not {getattr(self, name)}")
        if self.param_rows * self.cols > 65536:
            raise ConfigError(f"param_rows * cols must be at most 65536 (the parameter buffer's "
                              f"rows are addressed with 16 bits), not {self.param_rows * self.cols}")
        if self.weight_rows < 2 * self.rows:
            raise ConfigError(
                f"weight_rows must hold two weight tiles (>= 2 * rows = {2 * self.rows}), "
                f"not {self.weight_rows}")

    # -- derived quantities -------------------------------------------------
    @property
    def bus_bytes(self) -> int:
        """Bytes per DRAM bus word: ``bus_bits / 8`` (8, 16 or 32)."""
        return self.bus_bits // 8

    @property
    def dram_words(self) -> int:
        """DRAM size in bus words (the bus's address range)."""
        return self.dram_bytes // self.bus_bytes

    @property
    def host_words(self) -> int:
        """DRAM size in 64-bit words: the address range of the DRAM model's host port,
        which reads and writes 64-bit sub-words of the bus words at every bus width."""
        return self.dram_bytes // 8

    @property
    def param_depth(self) -> int:
        """Physical rows of the parameter buffer: one output channel's record
        (:data:`~celosia.rtl.isa.ParamRecord`: bias int32, M0 int32, shift int8) per row,
        ``param_rows`` groups of ``cols`` channels."""
        return self.param_rows * self.cols

    @property
    def rs_lines(self) -> int:
        """Ifmap line registers of the ``rs`` array: the ifmap rows one windowed GEMM
        may touch, ``(out_h - 1) * stride_h + (win_h - 1) * dil_h + 1 <= rs_lines``."""
        return 2 * (self.rows + self.cols)

    @property
    def array(self) -> str:
        return f"{self.rows}x{self.cols}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AccelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def digest(self) -> str:
        """A short stable hash of the config, for build caches."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` of integers (``b > 0``), exact for any size (no float division): tiles
    of ``b`` covering ``a`` items, bus words covering ``a`` bytes, ..."""
    return -(-a // b)


def check_config(config) -> AccelConfig:
    """``config`` itself if it is an :class:`AccelConfig`; a :class:`TypeError` otherwise.

    For the RTL components, which take a config and keep it.
    """
    if not isinstance(config, AccelConfig):
        raise TypeError(f"config must be an AccelConfig, not {config!r}")
    return config


def parse_array(text: str) -> tuple[int, int]:
    """Parse ``"8x8"`` / ``"4x8"`` into ``(rows, cols)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ConfigError(f"array must look like ROWSxCOLS (e.g. 8x8), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def markdown() -> str:
    """The configuration reference (docs/config.md), generated from :data:`RANGES`."""
    defaults = AccelConfig()
    lines = ["# Accelerator configuration", "",
             "Generated by `python -m celosia.rtl.config` from `rtl/config.py`; do not edit.", "",
             "Every `AccelConfig` field, its default and its allowed range. On the command line: "
             "`--array ROWSxCOLS`, `--dataflow NAME` and `--set FIELD=VALUE` for the rest. A value "
             "outside its range fails at construction with a message naming the field.", "",
             "| field | default | range | meaning |", "| --- | --- | --- | --- |"]
    for name, (lo, hi, what) in RANGES.items():
        allowed = ", ".join(map(str, CHOICES[name])) if name in CHOICES else f"{lo}..{hi}"
        lines.append(f"| `{name}` | {getattr(defaults, name)} | {allowed} | {what} |")
    lines.append(f"| `dataflow` | {defaults.dataflow} | {', '.join(DATAFLOWS)} | PE-array dataflow "
                 f"(docs/dataflows.md) |")
    lines += ["", "Further rules: `dram_bytes` is a multiple of the bus word (`bus_bits / 8` "
              "bytes); `dram_bytes_per_cycle <= bus_bits / 8`; buffer depths are even (two "
              "halves); `weight_rows >= 2 * rows` (one weight tile per half); `ppu_lanes <= "
              "min(bus_bits / 8, cols)`. A wider bus moves "
              "more bytes per request only when the DRAM model delivers them: set "
              "`dram_bytes_per_cycle` with it (e.g. `--set bus_bits=128 --set "
              "dram_bytes_per_cycle=16`); docs/hardware.md gives the DMA timing at each width. "
              f"The `rs` array has 2 x {RS_SPAD} filter-scratchpad "
              "entries per PE row (two banks) and `2 * (rows + cols)` ifmap line registers "
              "(docs/dataflows.md).", "",
              "The default `weight_rows` (1024 rows: 8 KB at 8 columns, the size of the default "
              "ifmap buffer) holds every weight of the bundled digits models, so the compiler keeps "
              "them on chip, loaded once by the initialization graph (docs/compiler.md); with 256 "
              "rows only part of them fitted. On an FPGA the buffer is 8 KB of block RAM at 8x8 "
              "(16 KB at 16x16); reduce it with `--set weight_rows=...` for the smallest devices.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    sys.stdout.write(markdown())
