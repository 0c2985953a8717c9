"""What a simulation back end is asked to do, and the one host routine that does it.

A :class:`Job` is a DRAM image plus a list of :class:`Run`\\ s (CSR writes, start,
wait for done, read counters and DRAM regions back). While a run goes, every pulse of
the top's ``node.done`` is a per-node counter snapshot (:data:`celosia.rtl.isa.SNAPSHOTS`,
rtl/controller/nodes.py); transports that can watch it (``take_nodes``) return them in
:attr:`RunResult.nodes`. :func:`run_job` performs a
job through a *transport* — four async primitives on the simulated
``SimTop``'s CSR bus and DRAM back door — so the Amaranth simulator (``pysim``)
and the cocotb/Verilator bench run exactly the same host code, as a board
driver would. Python only touches the design to load memory, start, poll the
status every ``poll_cycles`` and read back; never per compute cycle.

The DRAM back door is 64 bits wide at every bus width (``config.bus_bits``): host
word ``w`` is DRAM bytes ``8w .. 8w + 7`` (``rtl/dram.py``, :class:`DramModel`), so
jobs, the job file and the harnesses do not depend on the width.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from celosia.rtl import isa
from celosia.rtl.isa import Csr, ErrorCode, Status, unpack

__all__ = ["Run", "Job", "RunResult", "run_job", "COUNTERS", "POLL_CYCLES", "encode_job",
           "decode_results", "harness_header", "node_snapshot", "FLAG_STREAM", "FLAG_TRACE",
           "PROGRESS_CYCLES"]

#: How often (in cycles) the host polls ``STATUS`` while a run is going, by default.
POLL_CYCLES = 512

#: Counter CSRs read back after every run (:data:`celosia.rtl.isa.COUNTERS`), by report name.
COUNTERS = dict(zip(("cycles", "load_busy", "compute_busy", "store_busy", "macs", "dram_bytes_read",
                     "dram_bytes_written", "load_compute_overlap", "insns", "zero_skips",
                     "mac_cycles"),
                    isa.COUNTERS, strict=True))


@dataclass
class Run:
    """One start of the machine: CSR writes before ``CTRL=1``, regions read after done."""
    csr_writes: list[tuple[int, int]]
    readback: list[tuple[int, int]]  # (byte address, number of bytes)
    #: (byte address, bytes) written into DRAM before this run (e.g. the input sample)
    writes: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class Job:
    dram_bytes: int
    image: list[tuple[int, bytes]]  # (byte address, bytes) loaded once before the first run
    runs: list[Run]
    #: per run; the bench gives up (and says so) after this. The driver derives it from
    #: the program (:func:`celosia.sw.driver.cycle_limit`), as a last resort behind the
    #: hardware watchdog (the WATCHDOG CSR).
    max_cycles: int = 50_000_000

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        runs = [Run(**r) for r in d["runs"]]
        return cls(dram_bytes=d["dram_bytes"], image=d["image"], runs=runs,
                   max_cycles=d.get("max_cycles", 50_000_000))


@dataclass
class RunResult:
    status: int
    error: int
    error_info: int
    counters: dict[str, int]
    data: list[bytes]
    timed_out: bool = False
    #: FAULT_ADDR: the DRAM byte address of a DMA_OUT_OF_WINDOW / BAD_DESCRIPTOR stop, else 0
    fault_addr: int = 0
    #: The per-node snapshots of the run, in order: ``{"index": NODES_DONE, counter
    #: name: value, ...}`` (:data:`COUNTERS` names); empty where the harness cannot watch
    #: the ``node`` port.
    nodes: list[dict] = field(default_factory=list)
    #: With ``trace`` (C++ harness only): ``(cycle, issue, fin)`` per cycle of the run in
    #: which an instruction started or completed, ``cycle`` counted from the start (the
    #: CYCLES counter's value then), ``issue`` / ``fin`` 3-bit masks per queue (bit 0
    #: LOAD, 1 COMPUTE, 2 STORE; ``EventSignature``).
    events: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def error_name(self) -> str:
        try:
            return ErrorCode(self.error).name
        except ValueError:
            return f"UNKNOWN({self.error})"


def _words(addr: int, payload: bytes):
    """Split a byte region into 64-bit words (address in words), read-modify-free:
    regions are padded by the caller to 8-byte alignment."""
    if addr % 8 or len(payload) % 8:
        raise ValueError(f"DRAM region at {addr:#x} (+{len(payload)}) must be 8-byte aligned")
    for i in range(0, len(payload), 8):
        yield (addr + i) // 8, int.from_bytes(payload[i:i + 8], "little")


def _readback_span(addr: int, nbytes: int) -> tuple[int, int, int]:
    """(first word, end word, byte offset in the first word) of a readback region."""
    first, last = addr // 8, (addr + nbytes + 7) // 8
    return first, last, addr - first * 8


async def run_job(transport, job: Job, poll_cycles: int = POLL_CYCLES, progress=None) -> list[RunResult]:
    """Perform ``job`` through ``transport`` and return one :class:`RunResult` per run.

    ``transport`` provides ``async host_write(word_addr, value)``,
    ``async host_read(word_addr) -> int``, ``async csr_write(addr, value)``,
    ``async csr_read(addr) -> int`` and ``async wait(cycles)``, and optionally
    ``take_nodes() -> list[dict]`` (the snapshots seen since the last call, see
    :attr:`RunResult.nodes`). Zero words of the image are skipped (the DRAM model starts
    zeroed).
    """
    take_nodes = getattr(transport, "take_nodes", lambda: [])
    for addr, payload in job.image:
        for waddr, value in _words(addr, payload):
            if value:
                await transport.host_write(waddr, value)
    results = []
    for index, run in enumerate(job.runs):
        for addr, payload in run.writes:
            for waddr, value in _words(addr, payload):
                await transport.host_write(waddr, value)
        for addr, value in run.csr_writes:
            await transport.csr_write(addr, value)
        take_nodes()
        await transport.csr_write(Csr.CTRL, 1)
        waited = 0
        timed_out = False
        while True:
            await transport.wait(poll_cycles)
            waited += poll_cycles
            status = await transport.csr_read(Csr.STATUS)
            if unpack(Status, status)["done"]:
                break
            if waited >= job.max_cycles:
                timed_out = True
                break
        counters = {name: await transport.csr_read(csr) for name, csr in COUNTERS.items()}
        error_info = await transport.csr_read(Csr.ERROR_INFO)
        fault_addr = await transport.csr_read(Csr.FAULT_ADDR)
        data = []
        for addr, nbytes in run.readback:
            first, last, skip = _readback_span(addr, nbytes)
            blob = b"".join([(await transport.host_read(w)).to_bytes(8, "little")
                             for w in range(first, last)])
            data.append(blob[skip: skip + nbytes])
        results.append(RunResult(status=status, error=unpack(Status, status)["error"],
                                 error_info=error_info, counters=counters, data=data,
                                 timed_out=timed_out, fault_addr=fault_addr, nodes=take_nodes()))
        if progress is not None:
            progress(index + 1, len(job.runs))
    return results


# --- The same routine as a file, for the C++ harness (celosia/sim/harness.cpp) ---------
#
# run_job above and harness.cpp's main() perform the same steps in the same order; the
# job file holds everything run_job reads from ``job`` (image words already split and
# zero-filtered here, so the harness does no byte handling), and the result file holds
# everything run_job reads from the design. Little-endian u64 words. The CSR numbers,
# STATUS fields, counters and the two magic numbers reach the harness through the header
# celosia_isa.h (harness_header), which the Verilator build writes next to harness.cpp.

_MAGIC_JOB = int.from_bytes(b"CLSELJ03", "little")
_MAGIC_RES = int.from_bytes(b"CELSER03", "little")

#: Job-file flag: the harness prints a line on stdout per node snapshot
#: (``node RUN INDEX CYCLES``) and every :data:`PROGRESS_CYCLES` cycles of a run
#: (``cycles RUN CYCLES``), flushed, for a caller that shows progress.
FLAG_STREAM = 1
#: Job-file flag: the harness records the instruction events of every run
#: (:attr:`RunResult.events`; the top's ``events`` port).
FLAG_TRACE = 2
#: How often (simulated cycles of a run) a streaming harness reports them.
PROGRESS_CYCLES = 1 << 21


def node_snapshot(index: int, values) -> dict:
    """A :attr:`RunResult.nodes` entry: NODES_DONE and the snapshot's counters
    (``values`` in :data:`COUNTERS` order)."""
    return {"index": index, **dict(zip(COUNTERS, values, strict=True))}


def harness_header() -> str:
    """``celosia_isa.h``, included by ``harness.cpp``: :func:`celosia.rtl.isa.c_header`
    (CSR numbers, STATUS fields, error codes, the counter CSRs in :data:`COUNTERS` order)
    plus ``MAGIC_JOB`` / ``MAGIC_RES``, the first word of a job / result file."""
    return isa.c_header(MAGIC_JOB=_MAGIC_JOB, MAGIC_RES=_MAGIC_RES, FLAG_STREAM=FLAG_STREAM,
                        FLAG_TRACE=FLAG_TRACE, PROGRESS_CYCLES=PROGRESS_CYCLES)


def encode_job(job: Job, poll_cycles: int = POLL_CYCLES, stream: bool = False,
               trace: bool = False) -> bytes:
    """The job file ``harness.cpp`` performs: :func:`run_job` with ``poll_cycles``, as
    data; ``stream``: :data:`FLAG_STREAM`; ``trace``: :data:`FLAG_TRACE`."""
    if poll_cycles < 1:
        raise ValueError("poll_cycles must be positive")
    flags = (FLAG_STREAM if stream else 0) | (FLAG_TRACE if trace else 0)
    words = [_MAGIC_JOB, poll_cycles, job.max_cycles, flags]
    image = [(w, v) for addr, payload in job.image for w, v in _words(addr, payload) if v]
    words.append(len(image))
    for pair in image:
        words.extend(pair)
    words.append(len(job.runs))
    for run in job.runs:
        writes = [pair for addr, payload in run.writes for pair in _words(addr, payload)]
        words.append(len(writes))
        for pair in writes:
            words.extend(pair)
        words.append(len(run.csr_writes))
        for addr, value in run.csr_writes:
            words.extend((int(addr), value & 0xFFFFFFFF))
        words.append(len(run.readback))
        for addr, nbytes in run.readback:
            first, last, _ = _readback_span(addr, nbytes)
            words.extend((first, last))
    return struct.pack(f"<{len(words)}Q", *words)


def decode_results(job: Job, blob: bytes) -> tuple[list[RunResult], dict]:
    """Results of ``job`` from ``harness.cpp``'s result file, and its statistics:
    ``{"cycles": simulated cycles in all, "seconds": simulation wall time,
    "cpu_seconds": its CPU time}``."""
    if len(blob) % 8:
        raise ValueError("result file is not a whole number of 64-bit words")
    words = struct.unpack(f"<{len(blob) // 8}Q", blob)
    pos = 0

    def take(n=1):
        nonlocal pos
        if pos + n > len(words):
            raise ValueError("result file is truncated")
        pos += n
        return words[pos - n: pos]

    if take()[0] != _MAGIC_RES:
        raise ValueError("not a celosia result file (or another version)")
    if take()[0] != len(job.runs):
        raise ValueError("result file does not match the job (number of runs)")
    results = []
    for run in job.runs:
        status, timed_out = take(2)
        counters = dict(zip(COUNTERS, take(len(COUNTERS))))
        error_info, fault_addr = take(2)
        nodes = [node_snapshot(rec[0], rec[1:]) for rec in
                 (take(1 + len(COUNTERS)) for _ in range(take()[0]))]
        events = [(w >> 6, (w >> 3) & 7, w & 7) for w in take(take()[0])]
        data = []
        for addr, nbytes in run.readback:
            first, last, skip = _readback_span(addr, nbytes)
            region = b"".join(w.to_bytes(8, "little") for w in take(last - first))
            data.append(region[skip: skip + nbytes])
        results.append(RunResult(status=status, error=unpack(Status, status)["error"], error_info=error_info,
                                 counters=counters, data=data, timed_out=bool(timed_out),
                                 fault_addr=fault_addr, nodes=nodes, events=events))
    cycles, nanoseconds, cpu_nanoseconds = take(3)
    if pos != len(words):
        raise ValueError("result file has trailing data")
    return results, {"cycles": cycles, "seconds": nanoseconds * 1e-9,
                     "cpu_seconds": cpu_nanoseconds * 1e-9}
