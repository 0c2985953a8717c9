"""A UART receiver and transmitter (8 data bits, no parity, 1 stop bit), for the host bridge.

The bit time is ``divisor`` clock cycles: ``round(clk_hz / baud)`` (:func:`baud_divisor`),
e.g. 217 for 115200 baud from the ULX3S's 25 MHz clock (0.03% off), 104 from the
iCEBreaker's 12 MHz. Simulations use a small divisor (at least :data:`MIN_DIVISOR`).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from celosia.errors import ConfigError

__all__ = ["UartRx", "UartTx", "baud_divisor", "MIN_DIVISOR"]

#: Smallest bit time in cycles: the receiver samples a bit in its middle (divisor // 2).
MIN_DIVISOR = 4


def baud_divisor(clk_hz: float, baud: int) -> int:
    """Cycles per bit for ``baud`` at ``clk_hz``; a :class:`ConfigError` if the rate is off by
    more than 2% (a UART's tolerance) or the divisor is below :data:`MIN_DIVISOR`."""
    if baud <= 0:
        raise ConfigError(f"baud rate must be positive, not {baud}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR or abs(clk_hz / divisor - baud) > 0.02 * baud:
        raise ConfigError(f"baud rate {baud} cannot be made from a {clk_hz / 1e6:g} MHz clock (needs "
                          f"at least {MIN_DIVISOR} cycles per bit, within 2%); pick a standard rate "
                          f"such as 115200")
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be an integer >= {MIN_DIVISOR}, not {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """UART receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= :data:`MIN_DIVISOR`).

    Ports
    -----
    rx : In(1)
        The serial line (idle high); synchronised by two flip-flops inside.
    data : Out(stream.Signature(8))
        A received byte: ``valid`` for one cycle after the middle of its stop bit.
        No backpressure (``ready`` is ignored): the consumer takes it in that cycle.
        A byte whose stop bit is low (a framing error) is dropped.

    Timing: a start bit is confirmed ``divisor // 2`` cycles after the falling edge
    (a shorter low pulse is ignored); each data bit is sampled ``divisor`` cycles after
    the previous one, LSB first.
    """

    def __init__(self, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        count = Signal(range(div))
        bits = Signal(range(9))
        shreg = Signal(8)
        m.d.comb += self.data.payload.eq(shreg)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += count.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Elif(rx):  # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [count.eq(div - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Else():
                    m.d.sync += [count.eq(div - 1), shreg.eq((shreg >> 1) | (rx << 7)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(count != 0):
                    m.d.sync += count.eq(count - 1)
                with m.Else():
                    m.d.comb += self.data.valid.eq(rx)
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter; ``divisor``: clock cycles per bit, as :class:`UartRx`'s.

    Ports
    -----
    data : In(stream.Signature(8))
        The byte to send; taken (``ready``) while the transmitter is idle.
    tx : Out(1)
        The serial line, idle high: a start bit, 8 data bits LSB first and a stop bit,
        ``divisor`` cycles each, starting the cycle after the byte was taken. ``ready``
        is high again in the last cycle of the stop bit, so bytes go back to back.
    """

    def __init__(self, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        count = Signal(range(div))
        bits = Signal(range(11))        # bits left to send, stop bit included
        shreg = Signal(10, init=1)      # the line: bit 0 goes out now
        m.d.comb += self.tx.eq(shreg[0])
        last = Signal()
        m.d.comb += last.eq((bits == 0) | ((bits == 1) & (count == 0)))
        m.d.comb += self.data.ready.eq(last)
        with m.If(self.data.valid & self.data.ready):
            # start bit (0), the data, the stop bit (1)
            m.d.sync += [shreg.eq((self.data.payload << 1) | (1 << 9)), bits.eq(10),
                         count.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(count != 0):
                m.d.sync += count.eq(count - 1)
            with m.Else():
                m.d.sync += [count.eq(div - 1), shreg.eq((shreg >> 1) | (1 << 9)),
                             bits.eq(bits - 1)]
        return m
