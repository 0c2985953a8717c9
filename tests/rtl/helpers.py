"""Testbench helpers shared by the RTL tests.

Imported as ``from helpers import ...``: this folder has no ``__init__.py``, so
pytest's default (``prepend``) import mode puts it on ``sys.path`` before it
imports a test module from it.

All bench helpers are ``async`` and take the testbench context ``ctx``; each
returns with the strobes it raised lowered again.
"""

from amaranth.sim import Simulator

from celosia.rtl import isa
from celosia.rtl.isa import Csr

__all__ = ["simulate", "csr_write", "csr_read_all", "start_and_wait", "host_write", "program_words",
           "host_read_bytes", "image_words", "write_rows", "read_rows", "pack"]


def simulate(dut, *testbenches, background=()):
    """Run ``dut`` with a 1 MHz clock until every testbench has returned.

    ``background`` testbenches (monitors) are added first and do not keep the
    simulation alive.
    """
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in background:
        sim.add_testbench(tb, background=True)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


async def csr_write(ctx, csr, addr, value):
    """One CSR write through ``csr`` (a :data:`CsrSignature` port), one cycle."""
    ctx.set(csr.addr, addr)
    ctx.set(csr.w_data, value)
    ctx.set(csr.w_en, 1)
    await ctx.tick()
    ctx.set(csr.w_en, 0)


def csr_read_all(ctx, csr):
    """``{register name: value}`` of every :class:`Csr` (reads are combinational)."""
    values = {}
    for reg in Csr:
        ctx.set(csr.addr, reg)
        values[reg.name] = ctx.get(csr.r_data)
    return values


async def start_and_wait(ctx, csr, max_cycles):
    """Start the program (CTRL.start), then poll STATUS until done is set (the
    cycle it reads 1 is the last one ticked); AssertionError after ``max_cycles``."""
    await csr_write(ctx, csr, Csr.CTRL, 1)
    ctx.set(csr.addr, Csr.STATUS)
    for _ in range(max_cycles):
        await ctx.tick()
        if isa.unpack(isa.Status, ctx.get(csr.r_data))["done"]:
            return
    raise AssertionError(f"not done within {max_cycles} cycles")


# -- the DRAM host back door (DramModel and SimTop: host_addr / host_we / host_wdata / host_rdata)

def image_words(image, skip_zero=False):
    """``(word address, 64-bit word)`` pairs of a little-endian byte image (its
    length a multiple of 8), optionally without the zero words."""
    image = bytes(image)
    for a in range(0, len(image), 8):
        word = int.from_bytes(image[a:a + 8], "little")
        if word or not skip_zero:
            yield a >> 3, word


async def host_write(ctx, dram, words):
    """Write ``words`` (a ``{word address: value}`` dict or ``(address, value)``
    pairs) through the back door, one word per cycle."""
    items = words.items() if hasattr(words, "items") else words
    for addr, value in items:
        ctx.set(dram.host_addr, addr)
        ctx.set(dram.host_wdata, int(value))
        ctx.set(dram.host_we, 1)
        await ctx.tick()
    ctx.set(dram.host_we, 0)


def program_words(nodes, prog_base, kinds=None):
    """A program (``rtl/isa.py``) at byte address ``prog_base``: ``nodes`` are lists of
    256-bit instructions; the descriptor table (ended by ``n_insn == 0``) is followed by
    the nodes' instruction blocks (32-aligned offsets). Descriptor ``i`` has the kind
    ``kinds[i]`` (default ``i % 256``, as the compiler numbers nodes; consecutive
    descriptors of one kind are one node to the controller). Returns ``{word address:
    value}`` for :func:`host_write`."""
    words = {}
    table = 8 * (len(nodes) + 1)
    offset = -(-table // 32) * 32
    for i, node in enumerate(nodes):
        kind = i % 256 if kinds is None else kinds[i]
        words[(prog_base >> 3) + i] = isa.encode_descriptor(offset, len(node), kind)
        for j, insn in enumerate(node):
            for w, value in enumerate(isa.encode_words(insn)):
                words[(prog_base + offset + 32 * j >> 3) + w] = value
        offset += 32 * len(node)
    words[(prog_base >> 3) + len(nodes)] = isa.encode_descriptor(0, 0)
    return words


async def host_read_bytes(ctx, dram, addr, nbytes):
    """DRAM bytes ``[addr, addr + nbytes)`` read through the back door, one word per cycle."""
    out = bytearray()
    for a in range(addr >> 3, (addr + nbytes + 7) >> 3):
        ctx.set(dram.host_addr, a)
        await ctx.tick()
        out += ctx.get(dram.host_rdata).to_bytes(8, "little")
    off = addr & 7
    return bytes(out[off:off + nbytes])


# -- lane buffers ------------------------------------------------------------------

def pack(values, bits):
    """Lane values (two's complement for negatives) -> one buffer row, lane 0 lowest."""
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (i * bits) for i, v in enumerate(values))


def unpack(word, lanes, bits):
    """One buffer row -> its ``lanes`` lane values as signed ints (inverse of :func:`pack`)."""
    out = []
    for i in range(lanes):
        v = (word >> (i * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


async def write_rows(ctx, port, rows, start=0):
    """Write the packed ``rows`` into rows ``start, start + 1, ...`` through the write
    port ``port`` (:class:`BufferWriteSignature`), all lanes enabled, one row per cycle."""
    ctx.set(port.en, (1 << len(port.en)) - 1)
    for i, value in enumerate(rows):
        ctx.set(port.addr, start + i)
        ctx.set(port.data, value)
        await ctx.tick()
    ctx.set(port.en, 0)


async def read_rows(ctx, port, depth):
    """Rows ``0 .. depth - 1`` (packed ints) read through the read port ``port``
    (:class:`BufferReadSignature`), one row per cycle."""
    rows = []
    ctx.set(port.en, 1)
    for addr in range(depth):
        ctx.set(port.addr, addr)
        await ctx.tick()
        rows.append(ctx.get(port.data))
    ctx.set(port.en, 0)
    return rows


def engine_monitor(engine, events):
    """A background testbench checking an engine's insn / busy / done / error protocol
    (ready exactly when idle, busy from acceptance through done or error) and appending
    ``("accept" | "done" | "error", cycle)`` to ``events``."""
    async def monitor(ctx):
        cycle = 0
        expect_busy = False
        async for _, _, valid, ready, busy, done, error in ctx.tick().sample(
                engine.insn.valid, engine.insn.ready, engine.busy, engine.done, engine.error):
            assert busy == expect_busy, f"busy={busy} at cycle {cycle}"
            assert ready == (not busy)
            assert not (done and error)
            if valid and ready:
                events.append(("accept", cycle))
                expect_busy = True
            if done or error:
                assert busy
                events.append(("done" if done else "error", cycle))
                expect_busy = False
            cycle += 1
    return monitor


def overlap_monitor(engine, events):
    """:func:`helpers.engine_monitor` for an engine that takes instructions while busy
    (WSArray, OSArray, RSArray, FEIEArray): ``busy`` exactly while an accepted instruction (from the
    cycle after its acceptance) has not had its ``done`` / ``error`` (through that cycle); at
    most one of them per cycle, at most ``MAX_IN_FLIGHT`` outstanding;
    ``("accept" | "done" | "error", cycle)`` appended to ``events``."""
    async def monitor(ctx):
        cycle = 0
        outstanding = 0  # accepted in earlier cycles, not completed in earlier cycles
        async for _, _, valid, ready, busy, done, error in ctx.tick().sample(
                engine.insn.valid, engine.insn.ready, engine.busy, engine.done, engine.error):
            assert busy == (outstanding > 0), f"busy={busy} at cycle {cycle}"
            assert not (done and error)
            if done or error:
                assert outstanding > 0
                events.append(("done" if done else "error", cycle))
                outstanding -= 1
            if valid and ready:
                events.append(("accept", cycle))
                outstanding += 1
            assert outstanding <= type(engine).MAX_IN_FLIGHT
            cycle += 1
    return monitor


async def issue_and_drain(ctx, engine, insns, gaps, events, *, offer, junk, max_cycles=1000):
    """Offer each of ``insns`` on ``engine.insn`` (``offer(ctx, insn)`` sets the payload),
    after ``gaps[i]`` cycles with ``valid`` low and ``junk(ctx)`` on the payload, holding
    ``valid`` until accepted; then wait until ``events`` (:func:`engine_monitor`) holds a
    done or error for every instruction, and one more cycle. An instruction not accepted
    within ``max_cycles``, or not all finished within ``max_cycles`` after the last one is
    accepted, fails (an engine that never finishes must not hang the test)."""
    for insn, gap in zip(insns, gaps):
        ctx.set(engine.insn.valid, 0)
        for _ in range(gap):
            junk(ctx)
            await ctx.tick()
        offer(ctx, insn)
        ctx.set(engine.insn.valid, 1)
        for _ in range(max_cycles):
            _, _, ready = await ctx.tick().sample(engine.insn.ready)
            if ready:
                break
        else:
            raise AssertionError(f"instruction {len([k for k, _ in events if k == 'accept'])} not "
                                 f"accepted within {max_cycles} cycles: {events}")
    ctx.set(engine.insn.valid, 0)
    for _ in range(max_cycles):
        if sum(kind != "accept" for kind, _ in events) == len(insns):
            break
        await ctx.tick()
    else:
        raise AssertionError(f"not all instructions finished: {events}")
    await ctx.tick()


def psum_write_mux(m, psum_w, bench, engine):
    """Drive a psum buffer's write port from the bench's port while it writes (preloads),
    from the engine's otherwise (they never overlap in time)."""
    with m.If(bench.en.any()):
        m.d.comb += [psum_w.addr.eq(bench.addr), psum_w.en.eq(bench.en), psum_w.data.eq(bench.data)]
    with m.Else():
        m.d.comb += [psum_w.addr.eq(engine.addr), psum_w.en.eq(engine.en), psum_w.data.eq(engine.data)]
