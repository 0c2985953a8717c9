"""The 64-bit DRAM bus, a simulation DRAM model and a round-robin bus arbiter.

Bus protocol (:class:`DramBusSignature`, master side): ``req`` is a stream of
``{addr, we, wdata, wmask, tag}`` (``addr`` in 64-bit words, ``wmask`` bit ``b``
enables byte ``b``); ``rsp`` is a stream of ``{rdata, tag}`` **without
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

__all__ = ["DramReq", "DramRsp", "DramBusSignature", "DramModel", "BusArbiter"]

#: Tag width: the arbiter's client index travels in the tag.
TAG_BITS = 2


def DramReq(addr_words):
    return data.StructLayout({
        "addr": range(addr_words),
        "we": unsigned(1),
        "wdata": unsigned(64),
        "wmask": unsigned(8),
        "tag": unsigned(TAG_BITS),
    })


DramRsp = data.StructLayout({
    "rdata": unsigned(64),
    "tag": unsigned(TAG_BITS),
})


class DramBusSignature(wiring.Signature):
    """The DRAM bus from the master's point of view.

    Members
    -------
    req : Out(stream.Signature(DramReq(addr_words)))
    rsp : In(stream.Signature(DramRsp))
        No backpressure: ``ready`` is ignored.
    """

    def __init__(self, addr_words):
        if not isinstance(addr_words, int) or isinstance(addr_words, bool) or addr_words < 1:
            raise TypeError(f"DRAM address range must be a positive integer, not {addr_words!r}")
        self._addr_words = addr_words
        super().__init__({
            "req": Out(stream.Signature(DramReq(addr_words))),
            "rsp": In(stream.Signature(DramRsp)),
        })

    @property
    def addr_words(self):
        return self._addr_words

    def __eq__(self, other):
        return isinstance(other, DramBusSignature) and other.addr_words == self.addr_words

    def __hash__(self):
        return hash((DramBusSignature, self.addr_words))

    def __repr__(self):
        return f"DramBusSignature({self.addr_words})"


class DramModel(wiring.Component):
    """Simulation DRAM: ``config.dram_words`` words of 64 bit behind the bus.

    Members
    -------
    bus : In(DramBusSignature(config.dram_words))
        Bus slave. ``req.ready`` is high at most once every
        ``ceil(8 / config.dram_bytes_per_cycle)`` cycles (the bandwidth throttle;
        it does not depend on ``req.valid``). A read accepted in cycle ``t`` is
        answered (``rsp.valid``) in cycle ``t + config.dram_latency`` with the
        word as it was at acceptance.
    host_addr : In(range(config.dram_words))
    host_we : In(1)
        Back door for benches: writes ``host_wdata`` (all bytes) at ``host_addr``;
        it takes priority over a bus write in the same cycle.
    host_wdata : In(64)
    host_rdata : Out(64)
        Synchronous read: the word at ``host_addr`` of the previous cycle.
    """

    def __init__(self, config, storage: str = "memory"):
        if storage not in ("memory", "verilog"):
            raise ValueError(f"DRAM storage must be 'memory' or 'verilog', not {storage!r}")
        self._config = config
        self._storage = storage
        words = config.dram_words
        super().__init__({
            "bus": In(DramBusSignature(words)),
            "host_addr": In(range(words)),
            "host_we": In(1),
            "host_wdata": In(64),
            "host_rdata": Out(64),
        })

    @property
    def interval(self):
        """Cycles between accepted requests."""
        return -(-8 // self._config.dram_bytes_per_cycle)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        latency = cfg.dram_latency
        if self._storage == "memory":
            m.submodules.storage = storage = Memory(shape=64, depth=cfg.dram_words, init=[])
            wp = storage.write_port(granularity=8)
            rp = storage.read_port()
            hp = storage.read_port()
        else:
            wp, rp, hp = _verilog_storage(m, cfg.dram_words)

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

        with m.If(self.host_we):
            m.d.comb += [
                wp.addr.eq(self.host_addr),
                wp.data.eq(self.host_wdata),
                wp.en.eq(0xFF),
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
                Signal(64, name=f"d{k}_data")
            m.d.sync += [d_valid.eq(valid), d_tag.eq(tag), d_data.eq(rdata)]
            valid, tag, rdata = d_valid, d_tag, d_data
        m.d.comb += [
            self.bus.rsp.valid.eq(valid),
            self.bus.rsp.payload.tag.eq(tag),
            self.bus.rsp.payload.rdata.eq(rdata),
        ]

        m.d.comb += [hp.addr.eq(self.host_addr), self.host_rdata.eq(hp.data)]
        return m


#: The DRAM storage as plain Verilog (:func:`_verilog_storage`): the same ports and
#: timing as the ``lib.memory.Memory`` of :class:`DramModel` (one write port with byte
#: enables, synchronous non-transparent reads, ``hp`` always enabled), without the
#: per-word zero initialisation Amaranth emits for a memory (a megabyte of DRAM is
#: 130k Verilog lines and about a minute of Yosys); simulators start it at zero.
DRAM_STORAGE_VERILOG = """\
// celosia DRAM storage (rtl/dram.py, DRAM_STORAGE_VERILOG); simulation only.
module celosia_dram_storage #(parameter WORDS = 1, parameter ABITS = 1) (
    input  wire             clk,
    input  wire [ABITS-1:0] w_addr,
    input  wire [63:0]      w_data,
    input  wire [7:0]       w_en,
    input  wire [ABITS-1:0] r_addr,
    input  wire             r_en,
    output reg  [63:0]      r_data,
    input  wire [ABITS-1:0] h_addr,
    output reg  [63:0]      h_data
);
    reg [63:0] mem [0:WORDS-1];
    integer i;
    always @(posedge clk) begin
        if (r_en) r_data <= mem[r_addr];
        h_data <= mem[h_addr];
        for (i = 0; i < 8; i = i + 1)
            if (w_en[i]) mem[w_addr][8 * i +: 8] <= w_data[8 * i +: 8];
    end
endmodule
"""


def _verilog_storage(m, words):
    """An instance of ``celosia_dram_storage``; returns port records like Memory's
    (``wp``: addr, data, en; ``rp``: addr, en, data; ``hp``: addr, data)."""
    abits = max(1, ceil_log2(words))
    wp = SimpleNamespace(addr=Signal(abits, name="wp_addr"), data=Signal(64, name="wp_data"),
                         en=Signal(8, name="wp_en"))
    rp = SimpleNamespace(addr=Signal(abits, name="rp_addr"), en=Signal(name="rp_en"),
                         data=Signal(64, name="rp_data"))
    hp = SimpleNamespace(addr=Signal(abits, name="hp_addr"), data=Signal(64, name="hp_data"))
    m.submodules.storage = Instance(
        "celosia_dram_storage", p_WORDS=words, p_ABITS=abits, i_clk=ClockSignal(),
        i_w_addr=wp.addr, i_w_data=wp.data, i_w_en=wp.en,
        i_r_addr=rp.addr, i_r_en=rp.en, o_r_data=rp.data,
        i_h_addr=hp.addr, o_h_data=hp.data)
    return wp, rp, hp


class BusArbiter(wiring.Component):
    """``n`` bus masters onto one bus, round robin.

    Members
    -------
    clients : In(DramBusSignature(addr_words)).array(n)
        ``clients[i]`` is the slave side for master ``i``; its ``req.payload.tag``
        is ignored.
    bus : Out(DramBusSignature(addr_words))
        The shared bus. ``req.tag`` = index of the granted client; a response is
        routed to ``clients[rsp.tag]``.

    Among the clients with ``req.valid``, the grant goes to the first one after
    the client granted last (combinational, no added latency). ``bus.req.valid``
    is the OR of the clients' ``valid`` and never depends on ``bus.req.ready``.
    """

    def __init__(self, n, addr_words):
        if not isinstance(n, int) or not 1 <= n <= (1 << TAG_BITS):
            raise ValueError(f"BusArbiter client count must be 1..{1 << TAG_BITS}, not {n!r}")
        self._n = n
        super().__init__({
            "clients": In(DramBusSignature(addr_words)).array(n),
            "bus": Out(DramBusSignature(addr_words)),
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
