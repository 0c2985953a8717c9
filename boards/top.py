"""The board top: the accelerator, on-chip memory, the UART host bridge and status LEDs.

Board-independent: :mod:`celosia.boards.build` puts it on a board (pins, clock) and the
Verilator test bench (:mod:`celosia.boards.simulate`) drives its UART pins directly.
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.dram import DramModel
from celosia.rtl.isa import Status
from celosia.rtl.top import Accelerator
from celosia.sim.board import info_payload

from .bridge import UartBridge
from .uart import UartRx, UartTx

__all__ = ["BoardTop", "LEDS"]

#: The status LEDs, in ``leds`` bit order.
LEDS = ("running", "done", "error")


class BoardTop(wiring.Component):
    """Accelerator + on-chip memory + UART host bridge + status LEDs.

    The memory is the simulation DRAM model (:class:`~celosia.rtl.dram.DramModel`, same
    latency and bandwidth throttle, so the board's cycle counters equal the simulators'),
    ``config.dram_bytes`` of it, as block RAM: one write port and two read ports (the
    bus and the host port), which Yosys builds from two copies of the storage on
    ECP5 / iCE40 block RAM. The host reaches the memory and the CSRs through
    :class:`~celosia.boards.bridge.UartBridge` (frame format there and in
    :mod:`celosia.sim.board`).

    Parameters
    ----------
    config : AccelConfig
    divisor : int
        UART bit time in cycles (:func:`~celosia.boards.uart.baud_divisor`).
    clk_hz : int
        The clock frequency, reported to the host with the config (``INFO``).
    dram_storage : str
        ``"memory"`` (an Amaranth memory: synthesis, the Amaranth simulator) or
        ``"verilog"`` (the plain Verilog storage module the Verilator build uses,
        :data:`celosia.rtl.dram.DRAM_STORAGE_VERILOG`).

    Ports
    -----
    rx : In(1)
        UART from the host (idle high).
    tx : Out(1)
        UART to the host (idle high).
    leds : Out(3)
        bit 0 running (``STATUS.busy``), bit 1 done (``STATUS.done``), bit 2 error
        (``STATUS.error != 0``), as the bridge last read ``STATUS`` (every cycle between
        frames).
    idle : Out(1)
        The bridge waits for a frame and the accelerator is not running: nothing changes
        until the host sends a byte (the Verilator harness then sleeps; unused on boards).
    """

    def __init__(self, config: AccelConfig, divisor: int, clk_hz: int = 0, dram_storage: str = "memory"):
        self._config = check_config(config)
        self._divisor = divisor
        self._clk_hz = clk_hz
        self._dram_storage = dram_storage
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(len(LEDS)),
                          "idle": Out(1)})

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.accel = accel = Accelerator(cfg)
        m.submodules.dram = dram = DramModel(cfg, storage=self._dram_storage)
        m.submodules.uart_rx = uart_rx = UartRx(self._divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self._divisor)
        # a frame that stops for 64 byte times (10 bits each) is dropped
        m.submodules.bridge = bridge = UartBridge(cfg.host_words, info_payload(cfg, self._clk_hz),
                                                  timeout=64 * 10 * self._divisor)
        wiring.connect(m, accel=accel.bus, dram=dram.bus)
        wiring.connect(m, bridge=bridge.csr, accel=accel.csr)
        wiring.connect(m, rx=uart_rx.data, bridge=bridge.rx)
        wiring.connect(m, bridge=bridge.tx, tx=uart_tx.data)
        m.d.comb += [
            uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx),
            dram.host_addr.eq(bridge.host_addr), dram.host_we.eq(bridge.host_we),
            dram.host_wdata.eq(bridge.host_wdata), bridge.host_rdata.eq(dram.host_rdata),
        ]
        status = Status(bridge.status[:16])
        m.d.comb += self.leds.eq(Cat(status.busy, status.done, status.error != 0))
        m.d.comb += self.idle.eq(bridge.idle & ~status.busy)
        return m
