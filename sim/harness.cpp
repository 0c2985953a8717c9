// Plain C++ Verilator harness for celosia_sim_top: the fast path of celosia.sim.verilator.
//
// The model is celosia_fast_top (celosia.sim.verilator.fast_wrapper_verilog): celosia_sim_top
// with its reset made by a counter inside (asserted for the first three rising edges)
// instead of a top-level input. A top-level input that feeds the design's next-state
// logic (Amaranth's reset does, everywhere) puts that logic in Verilator's
// input-combinational region, which runs on every eval().
//
//     celosia_harness JOB_FILE RESULT_FILE
//
// Performs the job in JOB_FILE (written by celosia.sim.job.encode_job) and writes the
// results to RESULT_FILE (read by celosia.sim.job.decode_results). The host protocol is
// exactly celosia.sim.job.run_job as performed by the cocotb bench
// (celosia.sim.verilator_bench.CocotbTransport): every host primitive sets the inputs
// after a falling clock edge and lasts one clock cycle; results are read after the
// falling edge. Keep the three in step.
//
// The DRAM back door (host_addr / host_wdata / host_rdata) is 64 bits wide at every bus
// width (config.bus_bits): host word w is DRAM bytes 8w .. 8w + 7 (celosia.rtl.dram.DramModel),
// so neither this harness nor the job format depends on the width.
//
// Both files are sequences of little-endian 64-bit words:
//
// job:    MAGIC_JOB poll_cycles max_cycles flags n_image {word_addr value}
//         n_runs { n_writes {word_addr value} n_csr {addr value} n_readback {first last} }
// result: MAGIC_RES n_runs { status timed_out {counter} error_info fault_addr
//                            n_nodes {node_index {counter}} n_events {event}
//                            {readback words...} }
//         total_cycles sim_nanoseconds sim_cpu_nanoseconds
//
// Node snapshots: after every cycle of a run in which the top's node_done is high, the
// harness records node_index and node_counters (the SNAP_* CSRs, in COUNTERS order) as
// they stand; that costs nothing on the bus, so the machine's timing and the host
// protocol are those of run_job. With FLAG_STREAM in flags it also prints, flushed, a
// line "node RUN INDEX CYCLES" per snapshot and "cycles RUN CYCLES" every
// PROGRESS_CYCLES cycles of a run, for a caller showing progress.
//
// Instruction events (FLAG_TRACE): after every cycle of a run in which insn_issue or
// insn_fin (per queue: an instruction starts / completes) is non-zero, the harness
// records one word (j << 6) | (insn_issue << 3) | insn_fin, j the cycle's number
// counted from the start (the CYCLES counter's value in that cycle); none without the flag.
//
// (sim_*: from the model's construction to the last host access; wall-clock and
// this process's CPU time, which differ on a busy machine.)
//
// The CSR numbers, the STATUS fields, the counter CSRs (in the order of the result file)
// and the magic numbers come from celosia_isa.h, generated from celosia/rtl/isa.py by
// celosia.sim.job.harness_header() and written next to this file by the build.

#include "Vcelosia_fast_top.h"
#include "Vcelosia_fast_top___024root.h"
#include "celosia_isa.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

// The model's own evaluation steps (Verilator 5's generated code; weak, so that a
// Verilator naming them otherwise links and falls back on eval()):
//  * ___eval: what eval() runs, without its per-call bookkeeping (emptying the deferred-
//    delete list and the message queue of other threads, under mutexes: both always
//    empty here; about 3% of the run time);
//  * ___eval_phase__act / ___eval_phase__nba: the clocked part of ___eval alone. ___eval
//    first reruns the input-combinational ("ico") logic, everything that depends on a
//    top-level input (the host ports' paths into the CSRs and the DRAM: about 7% of the
//    run time), since it cannot know whether the inputs changed. Verilator also puts
//    that logic in the clocked region after the flops it reads, so after any
//    evaluation it is up to date; while the inputs stay as they were at the last
//    evaluation (the cycles the host only waits, most of them) rerunning it recomputes
//    the same values, and the clocked part alone gives the same result.
void Vcelosia_fast_top___024root___eval(Vcelosia_fast_top___024root* vlSelf)
    __attribute__((weak));
bool Vcelosia_fast_top___024root___eval_phase__act(Vcelosia_fast_top___024root* vlSelf)
    __attribute__((weak));
bool Vcelosia_fast_top___024root___eval_phase__nba(Vcelosia_fast_top___024root* vlSelf)
    __attribute__((weak));

namespace {

using namespace celosia_isa;

uint64_t cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// One clock cycle: a rising edge and its evaluation; ``inputs_changed``: whether a
// top-level input was set since the last evaluation (see above). The design has only
// rising-edge logic, so evaluating the falling edge does nothing but rerun the
// input-combinational logic and eval()'s fixed cost (about 10% of the run time). Where
// the model keeps the clock's value at the last eval() in __Vtrigprevexpr___TOP__clk__0
// (Verilator 5), clearing it makes the next evaluation with clk = 1 a rising edge: one
// evaluation per cycle. Otherwise (another Verilator naming) both edges are evaluated by
// eval(); the results are the same either way.
template <typename R, typename = void>
struct HasPrev : std::false_type {};
template <typename R>
struct HasPrev<R, std::void_t<decltype(std::declval<R&>().__Vtrigprevexpr___TOP__clk__0)>>
    : std::true_type {};

template <typename Top>
inline void clock_cycle(Top* top, bool inputs_changed) {
    using Root = std::remove_pointer_t<decltype(top->rootp)>;
    if constexpr (HasPrev<Root>::value) {
        Root* root = top->rootp;
        root->__Vtrigprevexpr___TOP__clk__0 = 0;
        top->clk = 1;
        if (!inputs_changed && Vcelosia_fast_top___024root___eval_phase__act &&
            Vcelosia_fast_top___024root___eval_phase__nba) {
            do {  // ___eval's loop less its ico phase (and its convergence checks)
                while (Vcelosia_fast_top___024root___eval_phase__act(root)) {}
            } while (Vcelosia_fast_top___024root___eval_phase__nba(root));
        } else if (Vcelosia_fast_top___024root___eval) {
            Vcelosia_fast_top___024root___eval(root);
        } else {
            top->eval();
        }
    } else {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    }
}

[[noreturn]] void die(const char* msg) {
    std::fprintf(stderr, "celosia_harness: %s\n", msg);
    std::exit(2);
}

struct Reader {
    std::vector<uint64_t> words;
    size_t pos = 0;
    uint64_t next() {
        if (pos >= words.size()) die("job file is truncated");
        return words[pos++];
    }
};

class Host {
  public:
    explicit Host(VerilatedContext* ctx) : top_(new Vcelosia_fast_top{ctx}) {
        top_->clk = 0;
        top_->csr_addr = 0;
        top_->csr_w_en = 0;
        top_->csr_w_data = 0;
        top_->host_addr = 0;
        top_->host_we = 0;
        top_->host_wdata = 0;
        top_->eval();
        // Reset (made in the wrapper) for three cycles, then two idle cycles, as the
        // cocotb bench's wrapper and start-up do.
        for (int i = 0; i < 5; ++i) tick();
        cycles_ = 0;
    }
    ~Host() { top_->final(); }

    // One clock cycle: the rising edge (flops sample the inputs set since the last
    // cycle; combinational outputs then settle). The falling edge does nothing.
    inline void tick() {
        clock_cycle(top_.get(), inputs_changed_);
        inputs_changed_ = false;
        ++cycles_;
        if (top_->node_done) record_node();
        if (trace_) {
            const uint64_t ev = (uint64_t{top_->insn_issue} << 3) | top_->insn_fin;
            if (ev) events_.push_back(((cycles_ - t0_) << 6) | ev);
        }
    }

    void host_write(uint64_t addr, uint64_t value) {
        set(top_->host_addr, addr);
        set(top_->host_wdata, value);
        set(top_->host_we, 1);
        tick();
        set(top_->host_we, 0);
    }
    uint64_t host_read(uint64_t addr) {
        set(top_->host_addr, addr);
        tick();
        return top_->host_rdata;
    }
    void csr_write(uint64_t addr, uint64_t value) {
        set(top_->csr_addr, addr);
        set(top_->csr_w_data, value);
        set(top_->csr_w_en, 1);
        tick();
        set(top_->csr_w_en, 0);
    }
    uint64_t csr_read(uint64_t addr) {
        set(top_->csr_addr, addr);
        tick();
        return top_->csr_r_data;
    }
    void wait(uint64_t cycles) {
        for (uint64_t i = 0; i < cycles; ++i) tick();
    }
    uint64_t cycles() const { return cycles_; }

    // The snapshots recorded since clear_nodes(): node_index, then the counters, each.
    const std::vector<uint64_t>& nodes() const { return nodes_; }
    void clear_nodes() { nodes_.clear(); }
    // FLAG_TRACE: the events since the last start (call right after the CTRL write).
    void trace(bool on) { trace_ = on; }
    void mark_start() {
        t0_ = cycles_;
        events_.clear();
    }
    const std::vector<uint64_t>& events() const { return events_; }

  private:
    void record_node() {
        nodes_.push_back(top_->node_index);
        for (uint64_t i = 0; i < N_COUNTERS; ++i) nodes_.push_back(top_->node_counters[i]);
    }

    // Sets a top-level input (truncated to the port's C++ type, as the port's width
    // requires) and notes whether it changed, for clock_cycle().
    template <typename Port>
    void set(Port& port, uint64_t value) {
        const Port v = static_cast<Port>(value);
        if (port != v) {
            port = v;
            inputs_changed_ = true;
        }
    }

    std::unique_ptr<Vcelosia_fast_top> top_;
    std::vector<uint64_t> nodes_;
    std::vector<uint64_t> events_;
    bool trace_ = false;
    uint64_t t0_ = 0;
    uint64_t cycles_ = 0;
    bool inputs_changed_ = true;  // the first evaluation is a full one
};

// FLAG_STREAM: prints the snapshots of run ``run`` recorded since the last call
// (``printed`` words of ``nodes`` were) and, every PROGRESS_CYCLES, the cycles waited.
void stream_progress(uint64_t run, uint64_t waited, const std::vector<uint64_t>& nodes,
                     size_t& printed, uint64_t& reported) {
    const size_t rec = 1 + N_COUNTERS;
    bool any = false;
    for (; printed + rec <= nodes.size(); printed += rec, any = true)  // COUNTERS[0]: CYCLES
        std::printf("node %llu %llu %llu\n", static_cast<unsigned long long>(run),
                    static_cast<unsigned long long>(nodes[printed]),
                    static_cast<unsigned long long>(nodes[printed + 1]));
    if (waited - reported >= PROGRESS_CYCLES) {
        std::printf("cycles %llu %llu\n", static_cast<unsigned long long>(run),
                    static_cast<unsigned long long>(waited));
        reported = waited;
        any = true;
    }
    if (any) std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) die("usage: celosia_harness JOB_FILE RESULT_FILE");
    Reader in;
    {
        FILE* f = std::fopen(argv[1], "rb");
        if (!f) die("cannot open the job file");
        uint64_t word;
        while (std::fread(&word, sizeof word, 1, f) == 1) in.words.push_back(word);
        std::fclose(f);
    }
    using namespace celosia_isa;
    if (in.next() != MAGIC_JOB) die("not a celosia job file (or another version)");
    const uint64_t poll_cycles = in.next();
    const uint64_t max_cycles = in.next();
    const uint64_t flags = in.next();
    const bool stream = (flags & FLAG_STREAM) != 0;
    if (poll_cycles == 0) die("poll_cycles must be positive");

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);
    auto t0 = std::chrono::steady_clock::now();
    const uint64_t cpu0 = cpu_ns();
    Host host(ctx.get());
    host.trace((flags & FLAG_TRACE) != 0);
    std::vector<uint64_t> out{MAGIC_RES};

    for (uint64_t n = in.next(); n; --n) {
        uint64_t addr = in.next();
        uint64_t value = in.next();
        host.host_write(addr, value);
    }
    const uint64_t n_runs = in.next();
    out.push_back(n_runs);
    for (uint64_t r = 0; r < n_runs; ++r) {
        for (uint64_t n = in.next(); n; --n) {
            uint64_t addr = in.next();
            uint64_t value = in.next();
            host.host_write(addr, value);
        }
        for (uint64_t n = in.next(); n; --n) {
            uint64_t addr = in.next();
            uint64_t value = in.next();
            host.csr_write(addr, value);
        }
        host.clear_nodes();
        host.csr_write(CSR_CTRL, 1);
        host.mark_start();
        uint64_t waited = 0, status = 0, timed_out = 0, reported = 0;
        size_t printed = 0;
        for (;;) {
            host.wait(poll_cycles);
            waited += poll_cycles;
            if (stream) stream_progress(r, waited, host.nodes(), printed, reported);
            status = host.csr_read(CSR_STATUS);
            if (status & STATUS_DONE_MASK) break;
            if (waited >= max_cycles) {
                timed_out = 1;
                break;
            }
        }
        out.push_back(status);
        out.push_back(timed_out);
        for (uint64_t c : COUNTERS) out.push_back(host.csr_read(c));
        out.push_back(host.csr_read(CSR_ERROR_INFO));
        out.push_back(host.csr_read(CSR_FAULT_ADDR));
        const std::vector<uint64_t>& nodes = host.nodes();
        if (stream) stream_progress(r, waited, nodes, printed, reported);
        out.push_back(nodes.size() / (1 + N_COUNTERS));
        out.insert(out.end(), nodes.begin(), nodes.end());
        out.push_back(host.events().size());
        out.insert(out.end(), host.events().begin(), host.events().end());
        for (uint64_t n = in.next(); n; --n) {
            uint64_t first = in.next();
            uint64_t last = in.next();
            for (uint64_t w = first; w < last; ++w) out.push_back(host.host_read(w));
        }
    }
    if (in.pos != in.words.size()) die("job file has trailing data");
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now() - t0).count();
    out.push_back(host.cycles());
    out.push_back(static_cast<uint64_t>(ns));
    out.push_back(cpu_ns() - cpu0);

    FILE* f = std::fopen(argv[2], "wb");
    if (!f) die("cannot open the result file");
    if (std::fwrite(out.data(), sizeof(uint64_t), out.size(), f) != out.size()) die("write failed");
    if (std::fclose(f) != 0) die("write failed");
    return 0;
}
