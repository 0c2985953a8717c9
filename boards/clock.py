"""The accelerator's clock on a board: the board's oscillator, or a PLL made from it.

``celosia build --board ulx3s-85f --clock-mhz F`` runs the board top at ``F`` MHz instead of
the board's 25 MHz oscillator: an ECP5 ``EHXPLLL`` multiplies and divides the oscillator
(:func:`ecp5_pll`), and :class:`PllDomain` drives the ``sync`` domain from its output. A
design slower than the oscillator (the 4x4 ``feie`` build, docs/boards.md) then still gets a
working bitstream, and a faster one can run at its Fmax.

ECP5 PLL arithmetic (Lattice TN1263, *ECP5 and ECP5-5G sysClock PLL/DLL Design and Usage
Guide*; the dividers as Lattice's Clarity Designer sets them, and as Project Trellis's
``ecppll`` searches them), with feedback from the primary output ``CLKOP``:

    f_pfd = f_in / CLKI_DIV          3.125 .. 400 MHz
    f_out = f_pfd * CLKFB_DIV        3.125 .. 400 MHz (CLKOP)
    f_vco = f_out * CLKOP_DIV        400 .. 800 MHz

CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io

from celosia.errors import BoardError

__all__ = ["ECP5_PLL_LIMITS", "Ecp5Pll", "ecp5_pll", "PllDomain"]

#: The ECP5 EHXPLLL's ranges (MHz) and divider limits (TN1263; DS1044 "sysCLOCK PLL Timing").
ECP5_PLL_LIMITS = {"pfd_mhz": (3.125, 400), "vco_mhz": (400, 800), "out_mhz": (3.125, 400),
                   "clki_div": 128, "clkfb_div": 80, "clkop_div": 128}

#: The VCO frequency preferred among exact settings: the middle of its range (as ``ecppll``).
_VCO_MID = 600

_MHZ = 1_000_000


@dataclass(frozen=True)
class Ecp5Pll:
    """An ``EHXPLLL`` setting: ``in_hz`` (the oscillator) divided by ``clki_div``, multiplied
    by ``clkfb_div`` (feedback from CLKOP), the VCO ``clkop_div`` times the output."""
    in_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def out_hz(self) -> Fraction:
        return Fraction(self.in_hz, self.clki_div) * self.clkfb_div

    @property
    def vco_hz(self) -> Fraction:
        return self.out_hz * self.clkop_div

    @property
    def out_mhz(self) -> float:
        return float(self.out_hz / _MHZ)

    def as_dict(self) -> dict:
        """The report's ``clock.pll``: the dividers and the VCO frequency."""
        return {"CLKI_DIV": self.clki_div, "CLKFB_DIV": self.clkfb_div, "CLKOP_DIV": self.clkop_div,
                "vco_mhz": round(float(self.vco_hz / _MHZ), 3)}


def ecp5_pll(in_hz: int, out_mhz: float) -> Ecp5Pll:
    """The EHXPLLL setting whose output is the fastest not above ``out_mhz`` (the most the
    design may run at) from an ``in_hz`` oscillator; among equally fast ones the VCO nearest
    600 MHz, then the first in (CLKI_DIV, CLKFB_DIV, CLKOP_DIV) order. A :class:`BoardError`
    if ``out_mhz`` is outside the output range."""
    lim = ECP5_PLL_LIMITS
    lo, hi = lim["out_mhz"]
    if not lo <= out_mhz <= hi:
        raise BoardError(f"--clock-mhz {out_mhz:g}: the ECP5 PLL makes {lo:g} to {hi:g} MHz")
    want = Fraction(out_mhz).limit_denominator(_MHZ) * _MHZ
    vco_lo, vco_hi = (f * _MHZ for f in lim["vco_mhz"])
    vco_mid = _VCO_MID * _MHZ
    best, key = None, None
    for clki in range(1, lim["clki_div"] + 1):
        pfd = Fraction(in_hz, clki)
        if not lim["pfd_mhz"][0] * _MHZ <= pfd <= lim["pfd_mhz"][1] * _MHZ:
            continue
        for fb in range(1, lim["clkfb_div"] + 1):
            out = pfd * fb
            if out > want:
                break
            d_lo, d_hi = max(1, -(-vco_lo // out)), min(lim["clkop_div"], vco_hi // out)
            if out < lo * _MHZ or d_lo > d_hi:
                continue
            # CLKOP_DIV: the VCO (out * div) in range and nearest 600 MHz (|out * d - 600|
            # is convex in d: the floor or ceiling of 600 / out, clamped), the smaller on a tie
            mid = int(vco_mid / out)
            div = min(sorted({min(max(d, d_lo), d_hi) for d in (mid, mid + 1)}),
                      key=lambda d: abs(out * d - vco_mid))
            k = (want - out, abs(out * div - vco_mid))
            if key is None or k < key:
                best, key = Ecp5Pll(in_hz, clki, fb, div), k
    if best is None:
        raise BoardError(f"--clock-mhz {out_mhz:g}: no ECP5 PLL setting makes {out_mhz:g} MHz or "
                         f"less from the {in_hz / 1e6:g} MHz oscillator")
    return best


class PllDomain(Elaboratable):
    """An ECP5 ``EHXPLLL`` from the platform's default clock, for the ``sync`` domain: the
    design's top defines the domain (:meth:`domain`) and drives its clock from :attr:`clk`.

    Like the platform's own ``sync`` domain (amaranth's Lattice platform) the domain is
    reset-less: the global set/reset (``SGSR``) holds every flip-flop in reset, here until
    the PLL reports lock, released through two flip-flops on the PLL's clock. nextpnr derives the
    output's timing constraint from the dividers and the oscillator's constraint (the
    platform's ``FREQUENCY PORT``); tests/boards/test_clock.py checks that its frequency is
    :attr:`Ecp5Pll.out_hz`.
    """

    def __init__(self, pll: Ecp5Pll):
        self.pll = pll
        self.clk = Signal(name="pll_clk")
        self.locked = Signal(name="pll_locked")

    @staticmethod
    def domain() -> ClockDomain:
        """The ``sync`` domain it clocks (reset by the global set/reset, so reset-less)."""
        return ClockDomain("sync", reset_less=True)

    def elaborate(self, platform):
        pll, m = self.pll, Module()
        clk_io = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        out_mhz = f"{pll.out_mhz:.6g}"
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{pll.in_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=out_mhz,
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=pll.clkop_div, p_CLKOP_CPHASE=pll.clkop_div // 2, p_CLKOP_FPHASE=0,
            p_CLKFB_DIV=pll.clkfb_div, p_CLKI_DIV=pll.clki_div, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_buf.i, i_CLKFB=self.clk, o_CLKOP=self.clk, o_LOCK=self.locked,
            i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0))
        # the global reset, held until lock and released in step with the PLL's clock
        gsr0, gsr1 = Signal(), Signal()
        m.submodules += [
            Instance("FD1S3AX", p_GSR="DISABLED", i_CK=self.clk, i_D=self.locked, o_Q=gsr0),
            Instance("FD1S3AX", p_GSR="DISABLED", i_CK=self.clk, i_D=gsr0, o_Q=gsr1),
            Instance("SGSR", i_CLK=self.clk, i_GSR=gsr1),
        ]
        return m
