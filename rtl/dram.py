"""The DRAM bus (``config.bus_bits`` wide), a simulation DRAM model and a round-robin
bus arbiter.

Bus protocol (:class:`DramBusSignature`, master side): ``req`` is a stream of
``{addr, we, wdata, wmask, tag}`` (``addr`` in bus words of ``bus_bits / 8`` bytes:
byte address ``a`` is byte ``a % (bus_bits / 8)`` of word ``a // (bus_bits / 8)``;
``wdata`` one word, ``wmask`` bit ``b`` enables byte ``b``); ``rsp`` is a stream of
``{rdata, tag}`` (one word) **without
backpressure** (``rsp.ready`` is ignored: a master takes a response in the cycle
it is valid). Reads return in order, ``dram_latency`` cycles after the request
was accepted, with the request's tag; writes produce no response.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2
from amaranth.lib.wiring import In, Out

from .config import BUS_WIDTHS, ceil_div

__all__ = ["DramReq", "DramRsp", "DramBusSignature", "DramModel", "BusArbiter", "HOST_BITS",
           "host_members", "request_interval"]

#: Tag width: the arbiter's client index travels in the tag.
TAG_BITS = 2


#: Bits of the DRAM model's host port: the host reads and writes 64-bit sub-words.
HOST_BITS = 64


def DramReq(addr_words, bus_bits=64):
    """A bus request: ``addr`` (bus words), ``we``, ``wdata`` (``bus_bits``), ``wmask``
    (``bus_bits / 8``), ``tag``."""
    return data.StructLayout({
        "addr": range(addr_words),
        "we": unsigned(1),
        "wdata": unsigned(bus_bits),
        "wmask": unsigned(bus_bits // 8),
        "tag": unsigned(TAG_BITS),
    })


def DramRsp(bus_bits=64):
    """A read response: ``rdata`` (``bus_bits``), ``tag``."""
    return data.StructLayout({
        "rdata": unsigned(bus_bits),
        "tag": unsigned(TAG_BITS),
    })


class DramBusSignature(wiring.Signature):
    """The DRAM bus from the master's point of view.

    Parameters
    ----------
    addr_words : int
        Bus words of DRAM (``config.dram_words``).
    bus_bits : int
        Word width (``config.bus_bits``: 64, 128 or 256).

    Members
    -------
    req : Out(stream.Signature(DramReq(addr_words, bus_bits)))
    rsp : In(stream.Signature(DramRsp(bus_bits)))
        No backpressure: ``ready`` is ignored.
    """

    def __init__(self, addr_words, bus_bits=64):
        if not isinstance(addr_words, int) or isinstance(addr_words, bool) or addr_words < 1:
            raise TypeError(f"DRAM address range must be a positive integer, not {addr_words!r}")
        if bus_bits not in BUS_WIDTHS:
            raise TypeError(f"DRAM bus width must be one of {', '.join(map(str, BUS_WIDTHS))} "
                            f"bits, not {bus_bits!r}")
        self._addr_words = addr_words
        self._bus_bits = bus_bits
        super().__init__({
            "req": Out(stream.Signature(DramReq(addr_words, bus_bits))),
            "rsp": In(stream.Signature(DramRsp(bus_bits))),
        })

    @classmethod
    def of(cls, config):
        """The bus of ``config``: ``config.dram_words`` words of ``config.bus_bits``."""
        return cls(config.dram_words, config.bus_bits)

    @property
    def addr_words(self):
        return self._addr_words

    @property
    def bus_bits(self):
        return self._bus_bits

    def __eq__(self, other):
        return (isinstance(other, DramBusSignature) and other.addr_words == self.addr_words
                and other.bus_bits == self.bus_bits)

    def __hash__(self):
        return hash((DramBusSignature, self.addr_words, self.bus_bits))

    def __repr__(self):
        return f"DramBusSignature({self.addr_words}, {self.bus_bits})"


class DramModel(wiring.Component):
    """Simulation DRAM: ``config.dram_words`` words of ``config.bus_bits`` behind the bus.

    Members
    -------
    bus : In(DramBusSignature.of(config))
        Bus slave. ``req.ready`` is high at most once every
        ``ceil(bus_bits / 8 / config.dram_bytes_per_cycle)`` cycles (the bandwidth
        throttle, :attr:`interval`; it does not depend on ``req.valid``). A read
        accepted in cycle ``t`` is answered (``rsp.valid``) in cycle ``t +
        config.dram_latency`` with the word as it was at acceptance. A write stores
        the bytes its ``wmask`` enables.
    host_addr : In(range(config.host_words))
    host_we : In(1)
        Back door for benches and harnesses, 64 bits wide at every bus width: the
        DRAM seen as ``config.host_words`` 64-bit words (``host_addr`` = byte address
        / 8; a wide bus word holds ``bus_bits / 64`` of them, the lowest address in
        its low bits). ``host_we`` writes ``host_wdata`` (those 8 bytes of the bus
        word, the others kept) at ``host_addr``; it takes priority over a bus write
        in the same cycle.
    host_wdata : In(64)
    host_rdata : Out(64)
        Synchronous read: the 64-bit word at ``host_addr`` of the previous cycle.
    """

    def __init__(self, config, storage: str = "memory"):
        if storage not in ("memory", "verilog"):
            raise ValueError(f"DRAM storage must be 'memory' or 'verilog', not {storage!r}")
        self._config = config
        self._storage = storage
        super().__init__({"bus": In(DramBusSignature.of(config)), **host_members(config)})

    @property
    def interval(self):
        """Cycles between accepted requests (:func:`request_interval`)."""
        return request_interval(self._config)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        latency = cfg.dram_latency
        bits = cfg.bus_bits
        if self._storage == "memory":
            m.submodules.storage = storage = Memory(shape=bits, depth=cfg.dram_words, init=[])
            wp = storage.write_port(granularity=8)
            rp = storage.read_port()
            hp = storage.read_port()
        else:
            wp, rp, hp = _verilog_storage(m, cfg.dram_words, cfg.bus_bytes)

        req = self.bus.req
        # Bandwidth throttle: after an accepted request, ready stays low interval-1 cycles.
        interval = self.interval
        if interval > 1:
            wait = Signal(range(interval))
            m.d.comb += req.ready.eq(wait == 0)
            with m.If(req.valid & req.ready):
                m.d.sync += wait.eq(interval - 1)
            with m.Elif(wait != 0):
                m.d.sync += wait.eq(wait - 1)
        else:
            m.d.comb += req.ready.eq(1)
        accept = Signal()
        m.d.comb += accept.eq(req.valid & req.ready)

        # The host port's 64-bit word ``host_addr`` is sub-word ``host_addr % subs`` of
        # bus word ``host_addr // subs``.
        subs = bits // HOST_BITS
        sub_bits = subs.bit_length() - 1
        host_word = self.host_addr[sub_bits:]
        host_sub = self.host_addr[:sub_bits]
        with m.If(self.host_we):
            m.d.comb += [
                wp.addr.eq(host_word),
                wp.data.eq(Cat([self.host_wdata] * subs)),
                wp.en.eq(Const(0xFF, bits // 8) << (host_sub * 8) if subs > 1 else 0xFF),
            ]
        with m.Else():
            m.d.comb += [
                wp.addr.eq(req.payload.addr),
                wp.data.eq(req.payload.wdata),
                wp.en.eq(Mux(accept & req.payload.we, req.payload.wmask, 0)),
            ]

        # The memory read takes one cycle; the rest of the latency is a delay line.
        is_read = Signal()
        m.d.comb += [
            is_read.eq(accept & ~req.payload.we),
            rp.addr.eq(req.payload.addr),
            rp.en.eq(is_read),
        ]
        valid = Signal()
        tag = Signal(TAG_BITS)
        m.d.sync += [valid.eq(is_read), tag.eq(req.payload.tag)]
        rdata = rp.data
        for k in range(latency - 1):
            d_valid, d_tag, d_data = Signal(name=f"d{k}_valid"), Signal(TAG_BITS, name=f"d{k}_tag"), \
                Signal(bits, name=f"d{k}_data")
            m.d.sync += [d_valid.eq(valid), d_tag.eq(tag), d_data.eq(rdata)]
            valid, tag, rdata = d_valid, d_tag, d_data
        m.d.comb += [
            self.bus.rsp.valid.eq(valid),
            self.bus.rsp.payload.tag.eq(tag),
            self.bus.rsp.payload.rdata.eq(rdata),
        ]

        m.d.comb += hp.addr.eq(host_word)
        if subs > 1:
            rd_sub = Signal(sub_bits)  # the sub-word of the word read (synchronously)
            m.d.sync += rd_sub.eq(host_sub)
            m.d.comb += self.host_rdata.eq(hp.data.word_select(rd_sub, HOST_BITS))
        else:
            m.d.comb += self.host_rdata.eq(hp.data)
        return m


def request_interval(config):
    """Cycles between two requests :class:`DramModel` accepts (its bandwidth throttle):
    ``ceil(bus_bits / 8 / dram_bytes_per_cycle)``."""
    return ceil_div(config.bus_bytes, config.dram_bytes_per_cycle)


def host_members(config):
    """The DRAM model's host back-door ports (:class:`DramModel`), also :class:`SimTop`'s:
    ``host_addr`` in 64-bit words, ``host_we``, ``host_wdata`` / ``host_rdata`` (64)."""
    return {
        "host_addr": In(range(config.host_words)),
        "host_we": In(1),
        "host_wdata": In(HOST_BITS),
        "host_rdata": Out(HOST_BITS),
    }


#: The DRAM storage as plain Verilog (:func:`_verilog_storage`): the same ports and
#: timing as the ``lib.memory.Memory`` of :class:`DramModel` (one write port with byte
#: enables, synchronous non-transparent reads, ``hp`` always enabled), without the
#: per-word zero initialisation Amaranth emits for a memory (a megabyte of DRAM is
#: 130k Verilog lines and about a minute of Yosys); simulators start it at zero.
DRAM_STORAGE_VERILOG = """\
// celosia DRAM storage (rtl/dram.py, DRAM_STORAGE_VERILOG); simulation only.
module celosia_dram_storage #(parameter WORDS = 1, parameter ABITS = 1, parameter BYTES = 8) (
    input  wire               clk,
    input  wire [ABITS-1:0]   w_addr,
    input  wire [8*BYTES-1:0] w_data,
    input  wire [BYTES-1:0]   w_en,
    input  wire [ABITS-1:0]   r_addr,
    input  wire               r_en,
    output reg  [8*BYTES-1:0] r_data,
    input  wire [ABITS-1:0]   h_addr,
    output reg  [8*BYTES-1:0] h_data
);
    reg [8*BYTES-1:0] mem [0:WORDS-1];
    integer i;
    always @(posedge clk) begin
        if (r_en) r_data <= mem[r_addr];
        h_data <= mem[h_addr];
        for (i = 0; i < BYTES; i = i + 1)
            if (w_en[i]) mem[w_addr][8 * i +: 8] <= w_data[8 * i +: 8];
    end
endmodule
"""


def _verilog_storage(m, words, nbytes):
    """An instance of ``celosia_dram_storage`` (``words`` words of ``nbytes`` bytes);
    returns port records like Memory's (``wp``: addr, data, en; ``rp``: addr, en, data;
    ``hp``: addr, data)."""
    abits = max(1, ceil_log2(words))
    bits = 8 * nbytes
    wp = SimpleNamespace(addr=Signal(abits, name="wp_addr"), data=Signal(bits, name="wp_data"),
                         en=Signal(nbytes, name="wp_en"))
    rp = SimpleNamespace(addr=Signal(abits, name="rp_addr"), en=Signal(name="rp_en"),
                         data=Signal(bits, name="rp_data"))
    hp = SimpleNamespace(addr=Signal(abits, name="hp_addr"), data=Signal(bits, name="hp_data"))
    m.submodules.storage = Instance(
        "celosia_dram_storage", p_WORDS=words, p_ABITS=abits, p_BYTES=nbytes, i_clk=ClockSignal(),
        i_w_addr=wp.addr, i_w_data=wp.data, i_w_en=wp.en,
        i_r_addr=rp.addr, i_r_en=rp.en, o_r_data=rp.data,
        i_h_addr=hp.addr, o_h_data=hp.data)
    return wp, rp, hp


class BusArbiter(wiring.Component):
    """``n`` bus masters onto one bus, round robin.

    Members
    -------
    clients : In(DramBusSignature(addr_words, bus_bits)).array(n)
        ``clients[i]`` is the slave side for master ``i``; its ``req.payload.tag``
        is ignored.
    bus : Out(DramBusSignature(addr_words, bus_bits))
        The shared bus. ``req.tag`` = index of the granted client; a response is
        routed to ``clients[rsp.tag]``.

    Among the clients with ``req.valid``, the grant goes to the first one after
    the client granted last (combinational, no added latency). ``bus.req.valid``
    is the OR of the clients' ``valid`` and never depends on ``bus.req.ready``.
    """

    def __init__(self, n, addr_words, bus_bits=64):
        if not isinstance(n, int) or not 1 <= n <= (1 << TAG_BITS):
            raise ValueError(f"BusArbiter client count must be 1..{1 << TAG_BITS}, not {n!r}")
        self._n = n
        signature = DramBusSignature(addr_words, bus_bits)
        super().__init__({
            "clients": In(signature).array(n),
            "bus": Out(signature),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n
        last = Signal(range(n), init=n - 1)
        grant = Signal(range(n))
        any_valid = Signal()
        valids = Cat(c.req.valid for c in self.clients)
        m.d.comb += any_valid.eq(valids.any())

        # Priority order last+1, last+2, ...: the later assignment wins, so walk it backwards.
        for start in range(n):
            with m.If(last == start):
                for k in reversed(range(1, n + 1)):
                    idx = (start + k) % n
                    with m.If(valids[idx]):
                        m.d.comb += grant.eq(idx)

        for i, c in enumerate(self.clients):
            with m.If(grant == i):
                m.d.comb += [
                    self.bus.req.payload.eq(c.req.payload),
                    c.req.ready.eq(self.bus.req.ready),
                ]
        m.d.comb += [
            self.bus.req.valid.eq(any_valid),
            self.bus.req.payload.tag.eq(grant),
        ]
        with m.If(self.bus.req.valid & self.bus.req.ready):
            m.d.sync += last.eq(grant)

        for i, c in enumerate(self.clients):
            m.d.comb += [
                c.rsp.valid.eq(self.bus.rsp.valid & (self.bus.rsp.payload.tag == i)),
                c.rsp.payload.eq(self.bus.rsp.payload),
            ]
        m.d.comb += self.bus.rsp.ready.eq(1)
        return m
