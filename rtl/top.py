"""The accelerator top (:class:`Accelerator`) and the simulation top (:class:`SimTop`).

``Accelerator`` = Controller + LoadEngine + compute engine (``config.dataflow``)
+ VectorEngine + StoreEngine + the four lane buffers + a 3-client BusArbiter (client 0 fetch,
1 load DMA, 2 store DMA). ``SimTop`` adds the DramModel behind the bus and
exposes its host back door for benches.

Buffer ports: ifmap and weight are written by the load DMA and read by the
compute engine (the ifmap buffer has a second write port, the store DMA's, for a
STORE with ``to_buf``: a layer's output kept on chip as the next layer's input; and
for ``feie`` with ``feie_read_ports = 2`` a second read port, ``r1``, the engine's
own: :func:`~celosia.rtl.dataflows.ifmap_read_ports`); param is written by the load
DMA and read by the store DMA;
psum is written by the compute engine and read on port 0 by the compute engine
(accumulate) and on port 1 by the store DMA; for ``feie`` with ``feie_write_ports = 2``
it has a second write port, ``w1``, and its accumulate read port, ``r2``, the engine's
own (:func:`~celosia.rtl.dataflows.psum_write_ports`).

The vector engine shares the ifmap read port 0 and the psum write port with the
compute engine: the controller runs one compute-queue instruction at a time, so
a combinational mux selects the vector engine while it is ``busy`` (it reads and
writes only then) and the compute engine otherwise, leaving the compute
engine's timing unchanged.

Each engine meets the controller through one ``EngineSignature`` port
(``rtl/controller/signatures.py``), joined with ``wiring.connect``: the compute and
vector engines have it as their ``ctrl`` member; the DMA engines list the same ports
one by one, gathered by ``engine_view``.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .arrays import make_engine
from .buffers import LaneBuffer
from .config import AccelConfig, check_config
from .controller import Controller, CsrSignature, EventSignature, NodeSignature, engine_view
from .dataflows import ifmap_read_ports, psum_write_ports
from .dma import LoadEngine, StoreEngine
from .dram import BusArbiter, DramBusSignature, DramModel, host_members
from .isa import PARAM_BYTES
from .vector import VectorEngine

__all__ = ["Accelerator", "SimTop"]


class Accelerator(wiring.Component):
    """One generated accelerator.

    Ports
    -----
    csr : In(CsrSignature)
    bus : Out(DramBusSignature.of(config))
    node : Out(NodeSignature)
        Per-node counter snapshots (:class:`~celosia.rtl.controller.Controller`):
        ``done`` pulses the cycle after each node boundary, with ``index`` (NODES_DONE)
        and ``counters`` (the SNAP_* CSRs, :data:`celosia.rtl.isa.COUNTERS` order).
    events : Out(EventSignature)
        Instructions starting / completing this cycle, per queue (instruction traces).

    ``blocks``: ``None`` (default) for the inline PE array (what the Amaranth simulator
    runs), or a dict to make the array's repeated PE columns / rows instances of modules
    converted separately and recorded there (:mod:`celosia.rtl.arrays.blocks`; the
    Verilog path, :func:`celosia.sim.verilog.generate`).
    """

    def __init__(self, config: AccelConfig, blocks: dict | None = None):
        self._config = check_config(config)
        self._blocks = blocks
        super().__init__({
            "csr": In(CsrSignature),
            "bus": Out(DramBusSignature.of(config)),
            "node": Out(NodeSignature),
            "events": Out(EventSignature),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.ctrl = ctrl = Controller(cfg)
        m.submodules.load = load = LoadEngine(cfg)
        m.submodules.compute = compute = make_engine(cfg)(cfg, blocks=self._blocks)
        m.submodules.vector = vector = VectorEngine(cfg)
        m.submodules.store = store = StoreEngine(cfg)
        m.submodules.arbiter = arbiter = BusArbiter(3, cfg.dram_words, cfg.bus_bits)
        n_rd = ifmap_read_ports(cfg)
        m.submodules.ifmap_buf = ifmap = LaneBuffer(cfg.rows, 8, cfg.ifmap_rows, read_ports=n_rd,
                                                    write_ports=2)
        m.submodules.weight_buf = weight = LaneBuffer(cfg.cols, 8, cfg.weight_rows)
        m.submodules.param_buf = param = LaneBuffer(PARAM_BYTES, 8, cfg.param_depth)
        n_wr = psum_write_ports(cfg)
        m.submodules.psum_buf = psum = LaneBuffer(cfg.cols, 32, cfg.psum_rows, read_ports=1 + n_wr,
                                                  write_ports=n_wr)

        wiring.connect(m, wiring.flipped(self.csr), ctrl.csr)
        wiring.connect(m, wiring.flipped(self.node), ctrl.node)
        wiring.connect(m, wiring.flipped(self.events), ctrl.events)
        wiring.connect(m, arbiter=arbiter.bus, top=wiring.flipped(self.bus))
        wiring.connect(m, fetch=ctrl.bus, arbiter=arbiter.clients[0])
        wiring.connect(m, load=load.bus, arbiter=arbiter.clients[1])
        wiring.connect(m, store=store.bus, arbiter=arbiter.clients[2])

        wiring.connect(m, controller=ctrl.compute, engine=compute.ctrl)
        wiring.connect(m, controller=ctrl.vector, engine=vector.ctrl)
        for name, dma in (("load", load), ("store", store)):
            port = getattr(ctrl, name)
            wiring.connect(m, controller=port, engine=engine_view(dma, port.signature))
        # LOADs check the read window, STOREs the write window
        for dma, wbase, wsize in ((load, ctrl.window_base, ctrl.window_size),
                                  (store, ctrl.wr_base, ctrl.wr_size)):
            m.d.comb += [dma.base.eq(ctrl.base), dma.window_base.eq(wbase),
                         dma.window_size.eq(wsize)]

        wiring.connect(m, load=load.ifmap_wr, buffer=ifmap.w)
        wiring.connect(m, store=store.ifmap_wr, buffer=ifmap.w1)
        wiring.connect(m, load=load.weight_wr, buffer=weight.w)
        wiring.connect(m, load=load.param_wr, buffer=param.w)
        wiring.connect(m, compute=compute.weight, buffer=weight.r0)
        wiring.connect(m, compute=compute.psum_rd, buffer=psum.r0)
        # ifmap read port 0 and the psum write port: vector engine while busy, else compute.
        m.d.comb += [compute.ifmap.data.eq(ifmap.r0.data), vector.ifmap.data.eq(ifmap.r0.data)]
        with m.If(vector.busy):
            m.d.comb += [ifmap.r0.addr.eq(vector.ifmap.addr), ifmap.r0.en.eq(vector.ifmap.en),
                         psum.w.addr.eq(vector.psum_wr.addr), psum.w.en.eq(vector.psum_wr.en),
                         psum.w.data.eq(vector.psum_wr.data)]
        with m.Else():
            m.d.comb += [ifmap.r0.addr.eq(compute.ifmap.addr), ifmap.r0.en.eq(compute.ifmap.en),
                         psum.w.addr.eq(compute.psum_wr.addr), psum.w.en.eq(compute.psum_wr.en),
                         psum.w.data.eq(compute.psum_wr.data)]
        if n_rd == 2:           # feie's second pixel read port: the engine's alone
            wiring.connect(m, compute=compute.ifmap1, buffer=ifmap.r1)
        wiring.connect(m, store=store.psum_rd, buffer=psum.r1)
        if n_wr == 2:           # feie's second psum write port and its accumulate read: the engine's alone
            wiring.connect(m, compute=compute.psum_wr1, buffer=psum.w1)
            wiring.connect(m, compute=compute.psum_rd1, buffer=psum.r2)
        wiring.connect(m, store=store.param_rd, buffer=param.r0)
        return m


class SimTop(wiring.Component):
    """Accelerator + DramModel, for simulation.

    Ports
    -----
    csr : In(CsrSignature)
    host_addr : In(range(config.host_words))
    host_we : In(1)
    host_wdata : In(64)
    host_rdata : Out(64)
        The DramModel back door (synchronous read, one cycle): 64-bit words at every
        bus width (``host_addr`` = byte address / 8; :class:`~celosia.rtl.dram.DramModel`).
    node : Out(NodeSignature)
        The accelerator's per-node snapshots (the harnesses record one per ``done``).
    events : Out(EventSignature)
        The accelerator's instruction events (the C++ harness logs them for traces).

    ``dram_storage``: ``"memory"`` (an Amaranth memory, for the Amaranth simulator) or
    ``"verilog"`` (an instance of ``celosia_dram_storage``, whose Verilog
    :data:`celosia.rtl.dram.DRAM_STORAGE_VERILOG` goes with the generated design).
    ``blocks``: as for :class:`Accelerator`.
    """

    def __init__(self, config: AccelConfig, dram_storage: str = "memory", blocks: dict | None = None):
        self._config = check_config(config)
        self._dram_storage = dram_storage
        self._blocks = blocks
        super().__init__({"csr": In(CsrSignature), "node": Out(NodeSignature),
                          "events": Out(EventSignature), **host_members(config)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = Accelerator(self._config, blocks=self._blocks)
        m.submodules.dram = dram = DramModel(self._config, storage=self._dram_storage)
        wiring.connect(m, wiring.flipped(self.csr), accel.csr)
        wiring.connect(m, wiring.flipped(self.node), accel.node)
        wiring.connect(m, wiring.flipped(self.events), accel.events)
        wiring.connect(m, accel=accel.bus, dram=dram.bus)
        m.d.comb += [
            dram.host_addr.eq(self.host_addr), dram.host_we.eq(self.host_we),
            dram.host_wdata.eq(self.host_wdata), self.host_rdata.eq(dram.host_rdata),
        ]
        return m
