"""The plots of ``celosia sweep`` (matplotlib, each as ``NAME.png`` and ``NAME.svg``).

:data:`PLOTS`, each from the result rows and the per-point summary:

* ``utilization``: PE utilization per layer, one panel per model, a line per design point
  (dataflow, array, swept fields);
* ``cycles_vs_array``: total cycles against PEs (``rows * cols``), a line per model,
  dataflow and swept fields;
* ``roofline``: per layer, MACs per cycle against MACs per DRAM byte, under each
  configuration's roof ``min(rows * cols, intensity * peak DRAM bytes per cycle)``
  (:func:`celosia.sw.analysis.peaks`);
* ``dram_bytes``: DRAM bytes per inference of each design point;
* ``energy``: the energy estimate of each design point split into its DRAM, buffer,
  array and RF terms (:data:`~celosia.sw.sweep_eval.ENERGY_COSTS`);
* ``pareto``: latency (cycles) and energy against PEs + buffer bytes (or, with
  ``--resources``, the LUT4s ``celosia synth`` counted for the point's array and dataflow),
  the Pareto front of each model drawn as a line.

Points without cycles (the golden back end) are left out of the plots that need cycles,
and those plots say so; a plot with nothing to show is not written (:func:`plot_all`
returns the names written).
"""

from __future__ import annotations

from pathlib import Path

from celosia.rtl.config import AccelConfig
from celosia.sw.analysis import peaks
from .sweep_eval import ENERGY_COSTS

__all__ = ["PLOTS", "plot_all", "pareto_front"]

PLOTS = ("utilization", "cycles_vs_array", "roofline", "dram_bytes", "energy", "pareto")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both coordinates (smaller is better in both),
    sorted by the first: for each ``x``, the best ``y``, kept only if it is below every
    ``y`` of a smaller ``x``."""
    front, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def _label(s: dict, swept: tuple, model: bool = False) -> str:
    extra = "".join(f" {k}={s[k]}" for k in swept)
    return (f"{s['model']} " if model else "") + f"{s['dataflow']} {s['rows']}x{s['cols']}{extra}"


def _save(fig, out: Path, name: str) -> None:
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(Path(out) / f"{name}.{ext}", dpi=80)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)


def plot_all(out: Path, rows: list[dict], summary: list[dict], configs: dict[str, dict],
             swept: tuple) -> tuple[list[str], list[str]]:
    """Write every plot of :data:`PLOTS` that has something to show into ``out``.
    ``configs``: point key -> its config fields. Returns ``(written, notes)``: the names of
    the plots written and a sentence for each left out or partial."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in summary if not s["error"]]
    timed = [s for s in ok if s["cycles"] is not None]
    timed_keys = {s["point"] for s in timed}
    written, notes = [], []
    if ok and len(timed) < len(ok):
        notes.append(f"{len(ok) - len(timed)} design point(s) have no cycles (the golden back end "
                     f"gives none): the utilization, cycles, roofline and latency plots leave them out.")
    models = list(dict.fromkeys(s["model"] for s in ok))

    def figure(name, draw, panels=1):
        fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), squeeze=False)
        try:
            if draw(fig, [a[0] for a in axes]) is not False:
                _save(fig, out, name)
                written.append(name)
            else:
                notes.append(f"no {name} plot: no design point has cycles.")
        finally:
            plt.close(fig)

    def utilization(fig, axes):
        if not timed:
            return False
        for ax, model in zip(axes, models):
            names, top = [], 1.0
            for s in (s for s in timed if s["model"] == model):
                layers = [r for r in rows if r["point"] == s["point"]]
                names = [r["layer"] for r in layers]
                utils = [r["utilization"] for r in layers]
                top = max([top] + [u for u in utils if u is not None])
                ax.plot(range(len(layers)), utils, marker=".", label=_label(s, swept))
            if 0 < len(names) <= 24:  # name the layers where they fit
                ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
            # (above 1 where the array skips MACs the layer counts: a conv's padding rows)
            ax.set(title=model, xlabel="layer", ylabel="PE utilization", ylim=(0, 1.05 * top))
            ax.legend(fontsize=6, ncol=2)
    if ok:
        figure("utilization", utilization, panels=len(models))

    def cycles(fig, axes):
        if not timed:
            return False
        ax = axes[0]
        groups = {}
        for s in timed:
            key = (s["model"], s["dataflow"], *(s[k] for k in swept))
            groups.setdefault(key, []).append((s["pes"], s["cycles"]))
        for key, pts in groups.items():
            pts.sort()
            extra = "".join(f" {k}={v}" for k, v in zip(swept, key[2:]))
            ax.plot(*zip(*pts), marker="o", label=f"{key[0]} {key[1]}{extra}")
        ax.set(xscale="log", yscale="log", xlabel="PEs (rows x cols)", ylabel="cycles per inference")
        ax.legend(fontsize=6)
    if ok:
        figure("cycles_vs_array", cycles)

    def roofline(fig, axes):
        layers = [r for r in rows if r["point"] in timed_keys and r["cycles"] and r["dram_bytes"]]
        if not layers:
            return False
        ax = axes[0]
        xs = [r["macs"] / r["dram_bytes"] for r in layers]
        lo, hi = min(xs) / 2, max(xs) * 2
        roofs = {peaks(AccelConfig.from_dict(configs[s["point"]])) for s in timed}
        for pm, pb in sorted(roofs):
            knee = pm / pb
            xr = [x for x in (lo, knee, hi) if lo <= x <= hi]
            ax.plot(xr, [min(pm, x * pb) for x in xr], "k-", lw=0.8)
            ax.text(hi, pm, f" {pm} MAC/cyc, {pb} B/cyc", fontsize=6, va="bottom", ha="right")
        for flow in dict.fromkeys(r["dataflow"] for r in layers):
            sel = [r for r in layers if r["dataflow"] == flow]
            ax.scatter([r["macs"] / r["dram_bytes"] for r in sel],
                       [r["macs"] / r["cycles"] for r in sel], s=10, label=flow)
        ax.set(xscale="log", yscale="log", xlabel="MACs per DRAM byte", ylabel="MACs per cycle")
        ax.legend(fontsize=7)
    if ok:
        figure("roofline", roofline)

    def bars(ax, values, ylabel):
        labels = [_label(s, swept, model=len(models) > 1) for s in ok]
        ax.bar(range(len(ok)), values)
        ax.set_xticks(range(len(ok)), labels, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel(ylabel)

    with_dram = [s for s in ok if s["dram_bytes"] is not None]

    def dram(fig, axes):
        if len(with_dram) < len(ok):
            return False
        bars(axes[0], [s["dram_bytes"] for s in ok], "DRAM bytes per inference")
    if ok:
        figure("dram_bytes", dram)

    def energy(fig, axes):
        if len(with_dram) < len(ok):
            return False
        ax = axes[0]
        c = ENERGY_COSTS
        terms = {"DRAM": [c["dram"] * s["dram_bytes"] for s in ok],
                 "buffer": [c["buffer"] * 2 * s["dram_bytes"] for s in ok],
                 "array": [c["array"] * s["macs"] for s in ok],
                 "RF": [c["rf"] * s["macs"] for s in ok]}
        bottom = [0.0] * len(ok)
        for name, vals in terms.items():
            ax.bar(range(len(ok)), vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(ok)), [_label(s, swept, model=len(models) > 1) for s in ok],
                      rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("energy estimate (RF accesses)")
        ax.legend(fontsize=7)
    if ok:
        figure("energy", energy)

    def pareto(fig, axes):
        for ax, (metric, label) in zip(axes, (("cycles", "latency (cycles)"),
                                              ("energy", "energy estimate"))):
            sel = [s for s in ok if s[metric] is not None and s["buffer_bytes"] is not None]
            if not sel:
                _note(ax, f"no {metric}: the golden back end gives no cycles" if metric == "cycles"
                      else "no energy figures")
                continue
            luts = all(s.get("luts") is not None for s in sel)   # celosia sweep --resources
            cost = (lambda s: s["luts"]) if luts else (lambda s: s["pes"] + s["buffer_bytes"])
            for model in models:
                pts = [(cost(s), s[metric]) for s in sel if s["model"] == model]
                if not pts:
                    continue
                dots = ax.scatter(*zip(*pts), s=12, label=model)
                ax.plot(*zip(*pareto_front(pts)), "-", color=dots.get_facecolor()[0], lw=1,
                        drawstyle="steps-post")
            ax.set(xscale="log", yscale="log", ylabel=label,
                   xlabel="LUT4 (celosia synth)" if luts else "PEs + buffer bytes")
            ax.legend(fontsize=7)
    if ok:
        figure("pareto", pareto, panels=2)
    return written, notes
