"""The search's summary: a table (JSON, Markdown, printed) and a plot of sparsity against accuracy.

When branches were run, every level that has them is also compared in one place (summary.json's
``comparisons``, a second Markdown table, the plot): the ticket against each baseline family
(``random`` as the mean ± sample standard deviation over its seeds) against the dense model
(level 0), on validation and test.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from edgeticket import paths
from edgeticket.fsio import read_json, write_json, write_text


def collect_rows(root: Path) -> list[dict]:
    """One row per finished level and branch, branches right after their level."""
    rows = []
    for level_dir in sorted(root.glob("level_*")):
        level = paths.parse_level_name(level_dir.name)
        if level is None:
            continue
        for folder in [level_dir, *sorted(level_dir.glob("branch_*"))]:
            sp, mt = folder / paths.SPARSITY, folder / paths.METRICS
            if not (sp.exists() and mt.exists()):
                continue
            s, m = read_json(sp), read_json(mt)
            rows.append({
                "level": level,
                "branch": folder.name.removeprefix("branch_") if folder != level_dir else "",
                "path": str(folder),
                "sparsity": s["total"]["sparsity"],
                "mask_sparsity": s["total"].get("mask_sparsity", s["total"]["sparsity"]),
                "channel_sparsity": s["total"]["channel_sparsity"],
                "macs": s.get("macs", {}).get("channel"),
                "macs_dense": s.get("macs", {}).get("dense"),
                "predicted_latency_ms": s.get("predicted_latency_ms"),
                "predicted_speedup": s.get("predicted_speedup"),
                "checked_speedup": s.get("latency_check", {}).get("measured_speedup"),
                "val": m.get("val", {}),
                "test": m.get("test", {}),
            })
    return rows


def branch_family(name: str) -> str:
    """'random_s1' -> 'random': seeds of one baseline are one family."""
    return name.split("_s", 1)[0] if name else ""


COMPARED = ("delta1", "rmse", "abs_rel")


def mean_std(values: list[float]) -> dict:
    """{"mean", "std" (sample, n - 1; 0 for one value), "n"}."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def comparisons(rows: list[dict]) -> list[dict]:
    """Per level with branches: the ticket, each baseline family (mean ± std over its members) and
    the dense model (level 0), on val and test."""
    tickets = {r["level"]: r for r in rows if not r["branch"]}
    dense = tickets.get(0)
    out = []
    for level in sorted({r["level"] for r in rows if r["branch"]}):
        families: dict[str, list[dict]] = {}
        for r in rows:
            if r["level"] == level and r["branch"]:
                families.setdefault(branch_family(r["branch"]), []).append(r)
        ticket = tickets.get(level)
        entry = {"level": level, "sparsity": ticket["sparsity"] if ticket else None,
                 "ticket": _scores(ticket), "dense": _scores(dense), "baselines": {}}
        for fam, members in sorted(families.items()):
            entry["baselines"][fam] = {
                "branches": [m["branch"] for m in members],
                "sparsity": mean_std([m["sparsity"] for m in members]),
                **{split: {k: mean_std([m[split][k] for m in members]) for k in COMPARED
                           if all(k in m[split] for m in members)} for split in ("val", "test")},
            }
        out.append(entry)
    return out


def _scores(row: dict | None) -> dict:
    if row is None:
        return {}
    return {split: {k: row[split][k] for k in COMPARED if k in row[split]} for split in ("val", "test")}


def format_comparisons(comps: list[dict], split: str = "val") -> str:
    """One row per level and baseline family: ticket, baseline (mean ± std, n) and dense."""
    if not comps:
        return ""
    head = (f"| level | sparsity | baseline | n | ticket {split} δ1 | baseline {split} δ1 | dense {split} δ1 | "
            f"ticket {split} rmse | baseline {split} rmse | dense {split} rmse |\n|---|---|---|---|---|---|---|---|---|---|\n")

    def one(d: dict, k: str) -> str:
        v = d.get(split, {}).get(k)
        return "–" if v is None else f"{v:.4f}"

    def band(b: dict, k: str) -> str:
        v = b.get(split, {}).get(k)
        return "–" if v is None else f"{v['mean']:.4f} ± {v['std']:.4f}"

    lines = []
    for c in comps:
        sp = "–" if c["sparsity"] is None else f"{c['sparsity']:.3f}"
        for fam, b in c["baselines"].items():
            lines.append(f"| {c['level']:02d} | {sp} | {fam} | {len(b['branches'])} | {one(c['ticket'], 'delta1')} | "
                         f"{band(b, 'delta1')} | {one(c['dense'], 'delta1')} | {one(c['ticket'], 'rmse')} | "
                         f"{band(b, 'rmse')} | {one(c['dense'], 'rmse')} |")
    return head + "\n".join(lines) + "\n"


def format_table(rows: list[dict]) -> str:
    timed = any(r.get("predicted_latency_ms") is not None for r in rows)
    checked = any(r.get("checked_speedup") is not None for r in rows)
    extra = (" predicted ms | predicted speed-up |" if timed else "") + (" measured speed-up (check) |" if checked else "")
    head = "| level | branch | sparsity | channel sparsity | GMACs |" + extra + " val δ1 | val rmse | val abs_rel |\n"
    head += "|---|---|---|---|---|" + ("---|---|" if timed else "") + ("---|" if checked else "") + "---|---|---|\n"
    lines = []
    for r in rows:
        v = r["val"]
        macs = f"{r['macs'] / 1e9:.3f}" if r.get("macs") else "–"
        pred = ""
        if timed:
            ms, x = r.get("predicted_latency_ms"), r.get("predicted_speedup")
            pred = f" {ms:.2f} | {x:.2f}x |" if ms is not None else " – | – |"
        if checked:
            c = r.get("checked_speedup")
            pred += f" {c:.2f}x |" if c is not None else " – |"
        lines.append(
            f"| {r['level']:02d} | {r['branch'] or '–'} | {r['sparsity']:.3f} | {r['channel_sparsity']:.3f} | {macs} |"
            f"{pred} {v.get('delta1', float('nan')):.4f} | {v.get('rmse', float('nan')):.4f} | "
            f"{v.get('abs_rel', float('nan')):.4f} |"
        )
    return head + "\n".join(lines) + "\n"


def write_summary(root: str | Path, plot: bool = True, target: dict | None = None) -> dict:
    """``target``: a latency-budgeted search's outcome (tickets.imp.target_outcome), kept across reruns."""
    root = Path(root)
    rows = collect_rows(root)
    comps = comparisons(rows)
    summary = {"search": str(root), "rows": rows, "comparisons": comps}
    cfg_path = root / paths.SEARCH
    if cfg_path.exists():
        summary["config"] = read_json(cfg_path).get("config")
    if target is None and (root / paths.SUMMARY_JSON).exists():
        target = read_json(root / paths.SUMMARY_JSON).get("target")
    if target is not None:
        summary["target"] = target
    write_json(root / paths.SUMMARY_JSON, summary)
    text = f"# Search summary: {root}\n\n" + format_table(rows)
    if comps:
        text += ("\n## Ticket vs baselines vs dense\n\nSparsity is effective (masked or in a dead channel); a "
                 "baseline is the mean ± sample std over its branches (the seeds of `random`).\n\n"
                 + format_comparisons(comps, "val") + "\n" + format_comparisons(comps, "test"))
    if target:
        text += f"\n{target['message']}\n"
    write_text(root / paths.SUMMARY_MD, text)
    if plot and rows:
        plot_summary(rows, root / paths.SUMMARY_PNG)
    return summary


def plot_summary(rows: list[dict], out: Path) -> None:
    """Sparsity against validation δ1 and rmse: the tickets, and each baseline's mean and spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeticket.fsio import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "delta1", "val δ1 (higher is better)"), (axes[1], "rmse", "val rmse, m (lower is better)")):
        main = [r for r in rows if not r["branch"]]
        xs = [_x(r) for r in main]
        ax.plot(xs, [r["val"].get(key) for r in main], "o-", label="ticket (IMP)")
        families: dict[str, dict[float, list[float]]] = {}
        for r in rows:
            if r["branch"]:
                families.setdefault(branch_family(r["branch"]), {}).setdefault(_x(r), []).append(r["val"].get(key))
        for fam, pts in sorted(families.items()):
            xs_f = sorted(pts)
            bands = [mean_std(pts[x]) for x in xs_f]
            ax.errorbar(xs_f, [b["mean"] for b in bands], yerr=[b["std"] for b in bands], fmt="s--", capsize=3,
                        label=f"{fam} (mean ± sd)")
        dense = next((r for r in main if r["level"] == 0 and key in r["val"]), None)
        if dense is not None and families:
            ax.axhline(dense["val"][key], color="grey", linestyle=":", label="dense (level 0)")
        ax.set_xlabel("effective sparsity of the prunable layers")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _x(row: dict) -> float:
    return row["sparsity"]
