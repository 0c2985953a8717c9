"""The compiled program: binary image, static data and the DRAM segments it needs.

A :class:`Program` does not know where it will live: every DRAM address in it
is (base register, offset). The driver decides the memory map
(:meth:`Program.layout`) and links by writing base registers;
:meth:`Program.check_dram` proves that map fits the configured DRAM before any run
(the CLI's ``compile`` and ``run``, and the driver on every back end, call it).

It holds two graphs (seed 000): the *execution graph* (:attr:`Program.nodes`, one
node per layer, run once per input) and, when some weights stay on chip, the
*initialization graph* (:attr:`Program.init`, one node of LOADs that fill the weight
buffer's resident region, run once per job before the first execution run). Each
has its own descriptor table in the image: the execution graph's at the image's
start, the initialization graph's at :attr:`Program.init_offset`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from celosia.errors import CompileError
from celosia.rtl import isa
from celosia.rtl.config import RANGES, AccelConfig
from celosia.rtl.dataflows import dataflow

__all__ = ["Program", "NodeCode", "align", "RUN_ONLY_FIELDS", "program_key", "MAX_DESC_INSNS", "DESC_KINDS"]


#: The :class:`~celosia.rtl.config.AccelConfig` fields the compiler does not read: the DRAM
#: bus and model (width, size, latency, bandwidth), the PPU's lanes and the feie engine's
#: ifmap read and psum write ports only change how long a run takes, and ``dram_bytes`` only whether it fits (:meth:`Program.check_dram`);
#: except the DRAM timing a lowering family's choice of mapping reads, its
#: ``TIMING_FIELDS`` (the rs family: ``bus_bits``, ``dram_latency``). Two configs with the
#: same :func:`program_key` compile to the same program (:meth:`Program.with_config`; a
#: sweep over those fields compiles once).
RUN_ONLY_FIELDS = ("bus_bits", "dram_bytes", "dram_latency", "dram_bytes_per_cycle", "ppu_lanes",
                   "feie_read_ports", "feie_write_ports")


def program_key(config: AccelConfig) -> tuple:
    """What of ``config`` the compiled program depends on, as ``(name, value)`` pairs: its
    fields but :data:`RUN_ONLY_FIELDS`, less the ``TIMING_FIELDS`` of its dataflow's
    lowering family."""
    read = getattr(dataflow(config.dataflow).lowering, "TIMING_FIELDS", ())
    return tuple((k, v) for k, v in config.to_dict().items() if k not in RUN_ONLY_FIELDS or k in read)


#: Instructions one node descriptor can hold (``NodeDescriptor.n_insn`` is 16 bits).
MAX_DESC_INSNS = isa.field_max(isa.NodeDescriptor, "n_insn")
#: A descriptor's kind is its node's index modulo this (the controller takes consecutive
#: descriptors of one kind as one node: rtl/controller/fetch.py).
DESC_KINDS = isa.field_max(isa.NodeDescriptor, "kind") + 1


def align(n: int, a: int = 64) -> int:
    return (n + a - 1) // a * a


@dataclass
class NodeCode:
    """The instructions of one node of the low-level graph (one layer)."""
    name: str
    op: str
    insns: list[int]            # 256-bit instruction words
    macs: int                   # per run (batch rows included)
    tiles: dict = field(default_factory=dict)  # tiling facts for the report


@dataclass
class Program:
    config: AccelConfig
    batch: int                  # samples per run
    nodes: list[NodeCode]
    static: bytes               # weights + PPU parameters, at BaseReg.STATIC
    input_bytes: int            # per run, at BaseReg.INPUT: int8 [batch, in_features]
    output_bytes: int           # per run, at BaseReg.OUTPUT: int8 [batch, out_features]
    scratch_bytes: int          # at BaseReg.SCRATCH
    in_features: int
    out_features: int
    #: The initialization graph (LOADs of the resident weight tiles), or ``None``.
    init: NodeCode | None = None
    #: The resident weights (:class:`~celosia.sw.compiler.alloc.WeightPlan`): ``layers``,
    #: ``rows`` used, ``saved_bytes`` (DRAM bytes one run of the execution graph no longer
    #: reads) and ``saved_insns`` (its LOADs removed); empty without an init graph.
    resident: dict = field(default_factory=dict)
    #: The layer outputs kept on chip (:class:`~celosia.sw.compiler.keep.KeepPlan`):
    #: ``layers`` (the producers), ``saved_bytes`` (DRAM bytes one run of the execution
    #: graph no longer moves) and ``saved_insns`` (consumer -> its ifmap LOADs removed);
    #: empty when no output is kept.
    kept: dict = field(default_factory=dict)

    def with_config(self, config: AccelConfig) -> "Program":
        """This program for ``config``, which has the same :func:`program_key` as
        :attr:`config` (the same instructions, descriptors and DRAM image: compiling for
        ``config`` gives them again); a :class:`ValueError` naming the fields otherwise."""
        if config == self.config:
            return self
        if program_key(config) != program_key(self.config):
            changed = [k for (k, v), (_, w) in zip(program_key(config), program_key(self.config)) if v != w]
            raise ValueError(f"the program was compiled for other {', '.join(changed)}")
        return dataclasses.replace(self, config=config)

    def _table_bytes(self, n_descs: int) -> int:
        return align((n_descs + 1) * isa.DESC_BYTES, isa.INSN_BYTES)

    @staticmethod
    def _pieces(node: NodeCode) -> list[int]:
        """Instruction counts of a node's descriptors: a descriptor holds at most
        :data:`MAX_DESC_INSNS` instructions, so a bigger node takes several in a row."""
        n = len(node.insns)
        return [min(MAX_DESC_INSNS, n - i) for i in range(0, n, MAX_DESC_INSNS)] or [0]

    @classmethod
    def descriptor_counts(cls, node: NodeCode) -> list[int]:
        """Instruction counts of the descriptors the table holds for ``node``: none for a
        node without instructions, several for one of more than :data:`MAX_DESC_INSNS`."""
        return [count for count in cls._pieces(node) if count]

    def descriptor_table(self, upto: int | None = None, delta: int = 0) -> bytes:
        """Descriptor table of the first ``upto`` nodes (all by default), ended by an empty one.

        Instruction offsets point into :meth:`image`'s blocks; ``delta`` is the
        distance from this table to the start of that image (a short table placed
        before the program runs the first ``upto`` nodes of it).
        A node of more than :data:`MAX_DESC_INSNS` instructions gets consecutive
        descriptors (the controller runs them back to back, like one).
        """
        n = len(self.nodes) if upto is None else upto
        return self._table(self.nodes, n, delta)

    def _table(self, nodes: list[NodeCode], n: int, delta: int) -> bytes:
        """The descriptor table of the first ``n`` of ``nodes``, their blocks following a
        table of all of them, ``delta`` bytes further away."""
        offset = self._table_bytes(sum(len(self._pieces(nd)) for nd in nodes)) + delta
        descs = []
        for kind, node in enumerate(nodes[:n]):
            for count in self.descriptor_counts(node):
                descs.append(isa.pack_bytes(isa.NodeDescriptor, insn_offset=offset, n_insn=count,
                                            kind=kind % DESC_KINDS))
                offset += count * isa.INSN_BYTES
        descs.append(isa.pack_bytes(isa.NodeDescriptor))  # n_insn = 0: end of table
        return b"".join(descs).ljust(self._table_bytes(len(descs) - 1), b"\0")

    def _section(self, nodes: list[NodeCode]) -> bytes:
        """A graph's descriptor table and its instruction blocks (each instruction its
        :data:`~celosia.rtl.isa.INSN_WORDS` little-endian words, low word first: the
        little-endian bytes of the whole word)."""
        return self._table(nodes, len(nodes), 0) + b"".join(
            insn.to_bytes(isa.INSN_BYTES, "little") for node in nodes for insn in node.insns)

    def _section_bytes(self, nodes: list[NodeCode]) -> int:
        """``len(self._section(nodes))``, without building it."""
        return (self._table_bytes(sum(len(self._pieces(nd)) for nd in nodes))
                + isa.INSN_BYTES * sum(len(nd.insns) for nd in nodes))

    @property
    def image_bytes(self) -> int:
        """``len(self.image())``, without building the image (:meth:`layout` needs only this)."""
        return self._section_bytes(self.nodes) + (0 if self.init is None else self._section_bytes([self.init]))

    def image(self) -> bytes:
        """The execution graph (descriptor table + instruction blocks), then, if there is
        one, the initialization graph's at :attr:`init_offset`; loaded at ``PROG_BASE``."""
        main = self._section(self.nodes)
        return main if self.init is None else main + self._section([self.init])

    @property
    def init_offset(self) -> int | None:
        """Byte offset in :meth:`image` of the initialization graph's descriptor table
        (``PROG_BASE`` of the init run is the image's address plus this), or ``None``."""
        if self.init is None:
            return None
        return len(self.descriptor_table()) + isa.INSN_BYTES * self.n_insns

    @property
    def n_insns(self) -> int:
        return sum(len(n.insns) for n in self.nodes)

    def layout(self, runs: int, base: int = 0) -> dict:
        """A DRAM memory map for ``runs`` runs: byte address of each segment.

        Program, static data and scratch are shared; every run gets its own input
        and output slot (so all inputs can be loaded at once and only the
        INPUT / OUTPUT base registers change between runs). Order: program, static,
        inputs, scratch, outputs: what the program may write (scratch, outputs) is one
        range at the end, the driver's write window (docs/hardware.md, "Protected
        regions").
        """
        m = {"program": base}
        cursor = base + align(self.image_bytes)
        m["static"] = cursor
        cursor += align(len(self.static))
        m["input_stride"] = align(self.input_bytes, 8)
        m["input"] = cursor
        cursor += align(m["input_stride"] * runs)
        m["scratch"] = cursor
        cursor += align(self.scratch_bytes)
        m["output_stride"] = align(self.output_bytes, 8)
        m["output"] = cursor
        cursor += align(m["output_stride"] * runs)
        m["end"] = cursor
        return m

    def check_dram(self, runs: int = 1, profile: bool = False) -> dict:
        """:meth:`layout` of ``runs`` runs, proven to fit ``config.dram_bytes``
        (``profile``: accepted for old callers; per-layer figures need no DRAM of their
        own, the controller snapshots its counters at node boundaries).

        Raises
        ------
        CompileError
            Naming the bytes needed, per segment, and the configured ``dram_bytes``.
        """
        lay = self.layout(runs)
        dram = self.config.dram_bytes
        if lay["end"] > dram:
            sizes = [("program", lay["static"] - lay["program"]),
                     ("weights and parameters", lay["input"] - lay["static"]),
                     ("inputs", lay["scratch"] - lay["input"]),
                     ("scratch", lay["output"] - lay["scratch"]), ("outputs", lay["end"] - lay["output"])]
            parts = ", ".join(f"{what} {n} B" for what, n in sizes)
            top = RANGES["dram_bytes"][1]
            fix = (f"increase it, e.g. --set dram_bytes={1 << (lay['end'] - 1).bit_length()}"
                   if lay["end"] <= top else f"more than the largest DRAM, {top} B")
            raise CompileError(f"the program does not fit the DRAM: it and {runs} run(s) of "
                               f"{self.batch} sample(s) need {lay['end']} bytes ({parts}, each "
                               f"segment aligned to 64 B); the config has dram_bytes={dram}; {fix}"
                               + ("" if runs == 1 else " or run fewer samples at once"))
        return lay

    def disassemble(self) -> str:
        lines = []
        graphs = [("initialization", [self.init])] if self.init is not None else []
        for title, nodes in graphs + [("execution", self.nodes)]:
            if graphs:
                lines.append(f"{title} graph:")
            lines.extend(self._listing(nodes))
        return "\n".join(lines)

    @staticmethod
    def _listing(nodes: list[NodeCode]) -> list[str]:
        lines = []
        for i, node in enumerate(nodes):
            lines.append(f"node {i}: {node.name} ({node.op}), {len(node.insns)} instructions")
            for j, word in enumerate(node.insns):
                d = isa.decode(word)
                op = d.pop("op")
                dep = ",".join(k for k, v in d.pop("dep", {}).items() if v)
                fields = " ".join(f"{k}={v.name if hasattr(v, 'name') else v}" for k, v in d.items())
                lines.append(f"  {j:4d} {getattr(op, 'name', op):5s} {fields} [{dep}]")
        return lines
