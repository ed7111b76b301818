"""The bench's pictures: accuracy against latency with the Pareto front, sparsity against δ1,
and a panel of test frames with one colour scale."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from edgeticket.fsio import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:  # a tight box takes in every label, so none is cut at the edge
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", pad_inches=0.15)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of points not dominated in (lower latency, better accuracy), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1] if higher_is_better else points[i][1]))
    front, best = [], None
    for i in order:
        acc = points[i][1]
        if best is None or (acc > best if higher_is_better else acc < best):
            front.append(i)
            best = acc
    return front


def accuracy_vs_latency(entries: list[dict], out: Path) -> None:
    """δ1 and rmse against p50 latency (its 95% interval as a horizontal bar), the Pareto front
    drawn whenever it exists: a dashed line, or a ringed marker when it is one point."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, better_high, label in ((axes[0], "delta1", True, "δ1 (higher is better)"),
                                        (axes[1], "rmse", False, "rmse, m (lower is better)")):
        pts = [(e["latency_ms"]["p50"], e["metrics"][key]) for e in entries]
        front = pareto_front(pts, better_high)
        for e, (x, y) in zip(entries, pts, strict=True):
            ci = e.get("latency", {}).get("batch1", {}).get("p50_ci")
            xerr = [[x - ci[0]], [ci[1] - x]] if ci else None
            ax.errorbar(x, y, xerr=xerr, fmt="*" if e.get("baseline") else "o", ms=9 if e.get("baseline") else 6,
                        capsize=2, lw=0.8)
            ax.annotate(e["name"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points",
                        annotation_clip=False)
        fx = [pts[i][0] for i in front]
        fy = [pts[i][1] for i in front]
        if len(front) == 1:
            ax.plot(fx, fy, "o", ms=14, mfc="none", mec="r", mew=1.2, label="Pareto front (one point)")
        elif front:
            ax.plot(fx, fy, "r--", lw=1, label="Pareto front")
        ax.margins(x=0.15, y=0.12)
        ax.set_xlabel("latency p50, ms (batch 1; bars: 95% interval)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def sparsity_vs_delta1(rows: list[dict], out: Path, title: str) -> None:
    """rows: {"sparsity", "delta1", "family", "criterion"}: each criterion's tickets as a line of
    their own, each baseline family (per criterion) as mean ± sd over its seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fams: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in rows:
        key = (r["family"], r.get("criterion") or "")
        fams.setdefault(key, {}).setdefault(round(r["sparsity"], 4), []).append(r["delta1"])
    for (fam, crit), pts in sorted(fams.items()):
        xs = sorted(pts)
        means = [statistics.fmean(pts[x]) for x in xs]
        sds = [statistics.pstdev(pts[x]) if len(pts[x]) > 1 else 0.0 for x in xs]
        what = f", {crit}" if crit else ""
        if fam == "ticket":
            ax.plot(xs, means, "o-", label=f"ticket (IMP{what})")
        else:
            ax.errorbar(xs, means, yerr=sds, fmt="s--", capsize=3, label=f"{fam}{what} (mean ± sd)")
    ax.margins(x=0.08, y=0.1)
    ax.set_xlabel("effective sparsity")
    ax.set_ylabel("δ1")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def prediction_panel(panel: dict, names: list[str], out: Path, max_models: int = 2) -> None:
    """RGB / ground truth / predictions on a few test frames, every depth on one colour scale."""
    n = len(panel["rgb"])
    if n == 0:
        return
    plt = _plt()
    cols = 2 + min(max_models, len(names))
    fig, axes = plt.subplots(n, cols, figsize=(3.0 * cols, 2.4 * n), squeeze=False)
    depths = [np.asarray(d) for d in panel["gt"]] + [np.asarray(p) for preds in panel["pred"][: cols - 2] for p in preds]
    valid = np.concatenate([d[d > 0].ravel() for d in depths if (d > 0).any()])
    vmin, vmax = float(np.percentile(valid, 1)), float(np.percentile(valid, 99))
    im = None
    for r in range(n):
        axes[r][0].imshow(panel["rgb"][r])
        axes[r][0].set_title(f"RGB (frame {panel['frames'][r]})", fontsize=8)
        im = axes[r][1].imshow(panel["gt"][r], cmap="viridis", vmin=vmin, vmax=vmax)
        axes[r][1].set_title("ground truth", fontsize=8)
        for k in range(cols - 2):
            axes[r][2 + k].imshow(panel["pred"][k][r], cmap="viridis", vmin=vmin, vmax=vmax)
            axes[r][2 + k].set_title(names[k], fontsize=8)
        for a in axes[r]:
            a.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="depth, m")
    _save(fig, out)
    plt.close(fig)


def predicted_vs_measured(entries: list[dict], out: Path) -> None:
    """A latency-budgeted search's predicted latency against the bench's measured p50, with y = x."""
    plt = _plt()
    pts = [(e["predicted_latency_ms"], e["latency_ms"]["p50"], e["name"]) for e in entries
           if e.get("predicted_latency_ms") is not None]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    lo = 0.0
    hi = max(max(p, m) for p, m, _ in pts) * 1.15
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15], color="0.85", label="±15%")
    for p, m, name in pts:
        ax.plot(p, m, "o")
        ax.annotate(name, (p, m), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted latency, ms (the search's latency model)")
    ax.set_ylabel("measured p50, ms (this bench)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
