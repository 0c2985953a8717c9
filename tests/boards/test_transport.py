"""The board transport (celosia.sim.board) against a Python stand-in for the board's
bridge: batching, read-ahead, the checks of INFO, retries after a bad checksum and the
one-line errors. The bridge itself: test_bridge.py; both together: test_board_sim.py."""

import asyncio
import struct

import pytest

from celosia.errors import DriverError
from celosia.rtl.config import AccelConfig
from celosia.sim.board import (SYNC, BoardTransport, Cmd, Reply, checksum, decode_info, info_payload,
                               request)

CONFIG = AccelConfig(rows=1, cols=1, dram_bytes=4096)


class FakeBoard:
    """A pyserial stand-in that answers request frames as the bridge's docstring says."""

    def __init__(self, config=CONFIG, bad_checksums=0, silent=False):
        self.words = config.host_words
        self.info = info_payload(config, 1_000_000_000)
        self.mem = [0] * self.words
        self.csr = {}
        self.frames = []          # (cmd, addr, words) of each good frame
        self.bad_checksums = bad_checksums
        self.silent = silent
        self.out = b""

    def reset_input_buffer(self):
        self.out = b""

    def close(self):
        pass

    def read(self, n):
        data, self.out = self.out[:n], self.out[n:]
        return data

    def write(self, frame):
        assert frame[0] == SYNC and checksum(frame[1:-1]) == frame[-1]
        if self.silent:
            return
        cmd, addr, n = struct.unpack_from("<BIH", frame, 1)
        payload = frame[8:-1]
        if self.bad_checksums:
            self.bad_checksums -= 1
            self._reply(Reply.BAD_CHECKSUM)
            return
        self.frames.append((cmd, addr, n + 1))
        if cmd == Cmd.INFO:
            self._reply(Reply.OK, self.info)
        elif cmd == Cmd.CSR_WRITE:
            self.csr[addr] = struct.unpack("<I", payload)[0]
            self._reply(Reply.OK)
        elif cmd == Cmd.CSR_READ:
            self._reply(Reply.OK, struct.pack("<I", self.csr.get(addr, 0)))
        elif addr + n >= self.words:
            self._reply(Reply.OUT_OF_RANGE)
        elif cmd == Cmd.MEM_WRITE:
            self.mem[addr:addr + n + 1] = struct.unpack(f"<{n + 1}Q", payload)
            self._reply(Reply.OK)
        elif cmd == Cmd.MEM_READ:
            self._reply(Reply.OK, struct.pack(f"<{n + 1}Q", *self.mem[addr:addr + n + 1]))
        elif cmd == Cmd.MEM_CLEAR:
            self.mem[addr:addr + n + 1] = [0] * (n + 1)
            self._reply(Reply.OK)

    def _reply(self, status, payload=b""):
        body = bytes([status]) + payload
        self.out += body + bytes([checksum(body)])


def transport(fake, config=CONFIG):
    return BoardTransport("fake", config, serial=fake, timeout=0.01).open()


def test_request_frame_bytes():
    # SYNC CMD A0..A3 N0 N1 PAYLOAD CHK, little endian; N = words - 1 for memory commands only
    assert request(Cmd.CSR_WRITE, 8, payload=b"\x01\x02\x03\x04") == bytes(
        [0xA5, 1, 8, 0, 0, 0, 0, 0, 1, 2, 3, 4, (1 + 8 + 1 + 2 + 3 + 4) % 256])
    assert request(Cmd.MEM_READ, 0x10203, 300) == bytes(
        [0xA5, 4, 3, 2, 1, 0, 0x2B, 1, (4 + 3 + 2 + 1 + 0x2B + 1) % 256])


def test_writes_are_batched_and_reads_served_from_a_block():
    fake = FakeBoard()
    t = transport(fake)

    async def go():
        for w in range(10, 20):
            await t.host_write(w, w * 3)
        await t.host_write(40, 7)                     # not consecutive: a second frame
        await t.csr_write(8, 0x1234)                  # sends the pending block first
        values = [await t.host_read(w) for w in range(9, 21)]
        return values, await t.csr_read(8)

    values, csr = asyncio.run(go())
    assert values == [0] + [w * 3 for w in range(10, 20)] + [0]
    assert csr == 0x1234 and fake.mem[40] == 7
    cmds = [(Cmd(c).name, a, n) for c, a, n in fake.frames]
    assert cmds == [("INFO", 0, 1), ("MEM_WRITE", 10, 10), ("MEM_WRITE", 40, 1), ("CSR_WRITE", 8, 1),
                    ("MEM_READ", 9, BoardTransport.READ_AHEAD), ("CSR_READ", 8, 1)]


def test_clear_and_a_write_after_a_read_invalidates_the_block():
    fake = FakeBoard()
    fake.mem = [5] * fake.words
    t = transport(fake)
    t.clear()
    assert fake.mem == [0] * fake.words

    async def go():
        first = await t.host_read(3)
        await t.host_write(3, 9)
        return first, await t.host_read(3)

    assert asyncio.run(go()) == (0, 9)


def test_bad_checksum_replies_are_retried():
    fake = FakeBoard()
    t = transport(fake)
    fake.bad_checksums = 2
    asyncio.run(t.csr_write(8, 5))
    assert fake.csr[8] == 5
    fake.bad_checksums = BoardTransport.RETRIES + 1
    with pytest.raises(DriverError, match="the board refused CSR_WRITE at 0x8: BAD_CHECKSUM"):
        asyncio.run(t.csr_write(8, 6))


def test_another_config_or_no_board_is_a_one_line_error():
    with pytest.raises(DriverError, match=r"fake: the board runs another accelerator configuration"):
        transport(FakeBoard(AccelConfig(rows=2, cols=2, dram_bytes=4096)))
    with pytest.raises(DriverError, match=r"fake: no reply from the board within 0.01 s \(got 0 of 1 bytes\)"):
        transport(FakeBoard(silent=True))


def test_out_of_range_is_reported():
    t = transport(FakeBoard())
    with pytest.raises(DriverError, match="refused MEM_CLEAR at 0x200: OUT_OF_RANGE"):
        t.clear(CONFIG.host_words, 1)


def test_info_carries_the_whole_config():
    config = AccelConfig(rows=4, cols=8, dataflow="feie", ifmap_rows=256, dram_bytes=1 << 17)
    info = decode_info(info_payload(config, 25_000_000))
    assert info == {"host_words": 1 << 14, "config_id": int(config.digest()[:8], 16), "clk_hz": 25_000_000,
                    "config": config}
    with pytest.raises(ValueError, match="INFO magic b'XXXX'"):
        decode_info(b"XXXX" + info_payload(config, 1)[4:])
