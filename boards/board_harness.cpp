// Verilator harness of the board top: its UART pins bridged to a pseudo-terminal.
//
//     celosia_board_harness MASTER_FD DIVISOR
//
// The model is celosia_board_sim (celosia.boards.simulate.wrapper_verilog): the board top
// (celosia.boards.top.BoardTop, bridge included) with its reset made inside. MASTER_FD is
// the master side of a pty the parent opened (inherited); the host side
// (celosia.sim.board.BoardTransport over pyserial) opens the slave side as a serial port.
//
// Every clock cycle: bytes from the pty are sent on the board's rx pin as UART frames
// (a start bit, 8 data bits LSB first, a stop bit; DIVISOR cycles each, back to back),
// and the tx pin is decoded (sampled in the middle of each bit) into bytes written to
// the pty. The pty is read without blocking when the rx line is idle, every 64 cycles;
// when the board has nothing to do (rx and tx idle for 32 bit times, the board's idle
// output high: the bridge waits for a frame, the accelerator is not running) the harness blocks until the host sends something, so an idle simulation takes no
// CPU. It exits when the host side closes (the pty hangs up).

#include "Vcelosia_board_sim.h"
#include "verilated.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <unistd.h>

namespace {

[[noreturn]] void die(const char* msg) {
    std::fprintf(stderr, "celosia_board_harness: %s\n", msg);
    std::exit(2);
}

class Pty {
  public:
    explicit Pty(int fd) : fd_(fd) {
        int flags = fcntl(fd_, F_GETFL);
        if (flags < 0 || fcntl(fd_, F_SETFL, flags | O_NONBLOCK) < 0) die("bad pty descriptor");
    }
    // Reads what the host sent (without blocking, or waiting up to timeout_ms); false once
    // the host side has closed.
    bool fill(std::deque<uint8_t>& out, int timeout_ms) {
        if (timeout_ms) {
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR) return false;
        }
        uint8_t buf[4096];
        ssize_t n = read(fd_, buf, sizeof buf);
        if (n > 0) {
            out.insert(out.end(), buf, buf + n);
            return true;
        }
        if (n == 0) return false;
        return errno == EAGAIN || errno == EINTR;  // EIO: the slave side closed
    }
    void send(uint8_t byte) {
        for (;;) {
            ssize_t n = write(fd_, &byte, 1);
            if (n == 1) return;
            if (n < 0 && errno != EAGAIN && errno != EINTR) die("cannot write to the pty");
            pollfd p{fd_, POLLOUT, 0};
            poll(&p, 1, 100);
        }
    }

  private:
    int fd_;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) die("usage: celosia_board_harness MASTER_FD DIVISOR");
    Pty pty(std::atoi(argv[1]));
    const int div = std::atoi(argv[2]);
    if (div < 4) die("DIVISOR must be at least 4");

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);
    auto top = std::make_unique<Vcelosia_board_sim>(ctx.get());
    top->clk = 0;
    top->rx = 1;
    top->eval();

    std::deque<uint8_t> pending;   // host bytes not yet sent on rx
    uint32_t rx_frame = 0;         // bits still to send, LSB first
    int rx_bits = 0, rx_count = 0;
    int tx_state = -1, tx_count = 0;  // -1: idle; 0: start bit; 1..8: data; 9: stop
    uint8_t tx_byte = 0;
    uint64_t idle = 0, cycle = 0;

    for (;;) {
        // rx: the next host byte when the line is free
        if (rx_bits == 0) {
            bool quiet = idle > static_cast<uint64_t>(32 * div) && top->idle;
            if (pending.empty() && (quiet || (cycle & 63) == 0)) {
                if (!pty.fill(pending, quiet ? 1000 : 0)) break;
            }
            if (!pending.empty()) {
                rx_frame = (static_cast<uint32_t>(pending.front()) << 1) | (1u << 9);
                pending.pop_front();
                rx_bits = 10;
                rx_count = div;
            }
        }
        top->rx = rx_bits ? (rx_frame & 1) : 1;

        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycle;

        if (rx_bits && --rx_count == 0) {
            rx_frame >>= 1;
            --rx_bits;
            rx_count = div;
        }
        // tx: decode the board's line
        const int line = top->tx;
        if (tx_state < 0) {
            if (!line) {
                tx_state = 0;
                tx_count = div / 2;
            }
        } else if (--tx_count == 0) {
            if (tx_state == 0) {
                tx_byte = 0;
            } else if (tx_state <= 8) {
                tx_byte |= static_cast<uint8_t>(line << (tx_state - 1));
            } else {
                if (line) pty.send(tx_byte);  // a low stop bit: a framing error, dropped
                tx_state = -2;
            }
            ++tx_state;
            tx_count = div;
        }
        idle = (rx_bits || tx_state >= 0 || !line) ? 0 : idle + 1;
    }
    top->final();
    return 0;
}
