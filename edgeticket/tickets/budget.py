"""Latency-budgeted channel tickets: remove channels by importance per millisecond saved (HALP-style).

A budgeted channel search (``--target-speedup X`` or ``--target-latency MS``) asks each level
for a *predicted latency*, ``(1 - rate)`` times the previous level's and never below the final
target, instead of a fraction of every group's channels. Within a level, the channels of all
prunable groups compete: the lowest-scoring block of ``round_to`` alive channels of each group
(the channel criterion's L1 score, divided by the group's mean alive score so that groups of
different scales compare) costs its summed score, and saves the latency that the table
(``edgeticket.bench.latency_model``) predicts for the group's producers (output width) and
consumers (input width). The block with the smallest cost per millisecond goes first, greedily,
until the prediction meets the level's target; no group goes below ``min(round_to, channels)``.
NetAdapt (Yang et al. 2018) and HALP (Shen et al. 2022) solve the same problem with measured
latency; HALP's knapsack is replaced by the greedy ratio, which is its LP relaxation's order.

``--allocation macs`` weighs each block's importance by the compute it removes: its cost is its
mean normalised score times the MACs it takes away, so that at a latency budget the ticket keeps
as many MACs as it can (where ORT runs a conv's channels cheaply per MAC, they stay). The
``latency`` allocation counts every channel as one unit of importance wherever it sits, so it
takes the channels with the most milliseconds each, the high-resolution ones, which are also the
MAC-heaviest: at equal measured speed-up it kept fewer MACs than ``uniform`` (BENCHMARKS.md).

``--allocation uniform`` is the control: the same schedule of predicted latencies, met by one
channel fraction shared by every group (each keeps ``round(channels * f)``, rounded to
``round_to``, its best by the same score), the largest ``f`` whose prediction meets the level's
target, by bisection. The two then differ only in how the channels are allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from edgeticket.tickets.criteria.common import (
    PruneResult,
    channel_alive,
    channel_scores,
    keep_fraction,
    set_channels,
    with_bn_entries,
)
from edgeticket.tickets.groups import ChannelGroup
from edgeticket.tickets.mask import Mask

Widths = dict[str, tuple[int, int]]


@dataclass
class LatencyBudget:
    """What a criterion needs to prune to a latency: the model, a level target and the widths of a mask."""

    model: object  # edgeticket.bench.latency_model.LatencyModel
    widths: Callable[[Mask], Widths]  # {conv: (in alive, out alive)} once a mask's dead channels are gone
    target_ms: float = 0.0
    allocation: str = "latency"  # latency (importance per ms saved), macs (importance x MACs per ms) or uniform
    timing: object = None  # edgeticket.bench.latency_model.Timing: how a level's latency check measures

    def predict(self, mask: Mask) -> float:
        return self.model.predict(self.widths(mask))


def group_floor(g: ChannelGroup, round_to: int) -> int:
    return min(round_to, g.channels)


def floor_widths(budget: LatencyBudget, mask: Mask, groups: list[ChannelGroup], round_to: int) -> Widths:
    """The widths with every prunable group at its floor: the fastest model a channel search can reach."""
    out = with_bn_entries(mask, groups)
    for g in groups:
        keep = torch.zeros(g.channels, dtype=torch.bool)
        keep[: group_floor(g, round_to)] = True
        set_channels(out, g, keep)
    return budget.widths(out)


def _step(n: int, round_to: int) -> int:
    """Channels one move removes: down to the next multiple of ``round_to``."""
    if round_to <= 1:
        return 1
    return n % round_to or round_to


_BISECTIONS = 30

Scores = Callable[[Mask, ChannelGroup], torch.Tensor]


def prune_within_budget(weights: dict[str, torch.Tensor], mask: Mask, groups: list[ChannelGroup],
                        budget: LatencyBudget, round_to: int, scores: Scores | None = None) -> PruneResult:
    """The next mask of a budgeted level, by the budget's allocation (``latency``, ``macs`` or ``uniform``)."""
    if budget.allocation == "uniform":
        return prune_uniform_to_latency(weights, mask, groups, budget, round_to, scores)
    return prune_to_latency(weights, mask, groups, budget, round_to, scores, by_macs=budget.allocation == "macs")


def prune_uniform_to_latency(weights: dict[str, torch.Tensor], mask: Mask, groups: list[ChannelGroup],
                             budget: LatencyBudget, round_to: int, scores: Scores | None = None) -> PruneResult:
    """The next mask: every group keeps the same fraction ``f`` of its channels (its best by ``scores``),
    the largest ``f`` whose predicted latency meets ``budget.target_ms``."""
    out = with_bn_entries(mask, groups)
    scores = scores or (lambda m, g: channel_scores(weights, m, g))
    alive = [channel_alive(out, g) for g in groups]
    ranked = [scores(out, g) for g in groups]

    def with_fraction(f: float) -> Mask:
        m = Mask(out)
        for g, a, s in zip(groups, alive, ranked, strict=True):
            set_channels(m, g, keep_fraction(g, a, s, f, round_to))
        return m

    target, notes = budget.target_ms, []
    if budget.predict(with_fraction(1.0)) <= target:
        return PruneResult(with_fraction(1.0), notes)
    lo, hi = 0.0, 1.0  # predict(lo) <= target < predict(hi), unless even the floors miss it
    fastest = budget.predict(with_fraction(lo))
    if fastest > target:
        notes.append(f"every group is at its floor; the prediction stays at {fastest:.2f} ms "
                     f"(target {target:.2f} ms)")
    else:
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            if budget.predict(with_fraction(mid)) <= target:
                lo = mid
            else:
                hi = mid
    return PruneResult(with_fraction(lo), notes)


def prune_to_latency(weights: dict[str, torch.Tensor], mask: Mask, groups: list[ChannelGroup],
                     budget: LatencyBudget, round_to: int, scores: Scores | None = None,
                     by_macs: bool = False) -> PruneResult:
    """The next mask: whole channels removed, cheapest importance per predicted ms first, to ``budget.target_ms``.

    ``scores(mask, group)`` is the importance of a group's channels: by default the channel
    criterion's L1 norm; IMP-Refill passes its count of weights surviving global magnitude pruning.
    ``by_macs``: a block's cost is its mean normalised score times the MACs it removes
    (``--allocation macs``) instead of its summed normalised score.
    """
    out = with_bn_entries(mask, groups)
    scores = scores or (lambda m, g: channel_scores(weights, m, g))
    lm = budget.model
    widths = dict(budget.widths(out))
    alive, order, norm, n = {}, {}, {}, {}
    for g in groups:
        a = channel_alive(out, g)
        s = scores(out, g).double()
        alive[g.index] = a
        idx = torch.nonzero(a).flatten()
        # ascending score, ties by index: the order in which this group gives channels up
        order[g.index] = idx[torch.sort(s[idx], stable=True).indices].tolist()
        mean = float(s[idx].mean()) if len(idx) else 0.0
        norm[g.index] = (s / mean if mean > 0 else torch.ones_like(s)).tolist()
        n[g.index] = len(idx)
    removed = {g.index: 0 for g in groups}
    convs = {g.index: sorted(set(g.producers) | set(g.consumers)) for g in groups}
    shapes = lm.shapes

    def conv_ms(name: str, w: Widths) -> float:
        return lm.conv_ms(name, *w[name]) if name in shapes else 0.0

    def conv_macs(name: str, w: Widths) -> float:
        return float(shapes[name].macs(*w[name])) if name in shapes else 0.0

    def with_width(g: ChannelGroup, k: int) -> Widths:
        w = {}
        for c in convs[g.index]:
            cin, cout = widths[c]
            if c in g.producers:
                cout = k
            if c in g.consumers:
                cin = k
            if shapes.get(c) is not None and shapes[c].depthwise:
                cin = cout = k
            w[c] = (cin, cout)
        return w

    def move(g: ChannelGroup) -> tuple[float, float, int] | None:
        k = n[g.index]
        step = _step(k, round_to)
        if k - step < group_floor(g, round_to):
            return None
        new = with_width(g, k - step)
        saved = lm.b * lm.factor(g.name) * sum(conv_ms(c, widths) - conv_ms(c, new) for c in convs[g.index])
        r = removed[g.index]
        cost = sum(norm[g.index][i] for i in order[g.index][r:r + step])
        if by_macs:
            cost = cost / step * sum(conv_macs(c, widths) - conv_macs(c, new) for c in convs[g.index])
        return cost, saved, step

    current = lm.predict(widths)
    notes = []
    cache: dict[int, tuple | None] = {g.index: move(g) for g in groups}
    neighbours = {g.index: [h for h in groups if set(convs[h.index]) & set(convs[g.index])] for g in groups}
    while current > budget.target_ms:
        best, best_ratio = None, float("inf")
        for g in groups:
            m = cache[g.index]
            if m is None:
                continue
            cost, saved, _ = m
            ratio = cost / saved if saved > 1e-12 else float("inf")
            if ratio < best_ratio or best is None and m is not None:
                best, best_ratio = g, ratio
        if best is None:
            notes.append(f"every group is at its floor; the prediction stays at {current:.2f} ms "
                         f"(target {budget.target_ms:.2f} ms)")
            break
        _, saved, step = cache[best.index]
        widths.update(with_width(best, n[best.index] - step))
        n[best.index] -= step
        removed[best.index] += step
        current = lm.predict(widths)
        for h in neighbours[best.index]:
            cache[h.index] = move(h)
    for g in groups:
        keep = alive[g.index].clone()
        keep[order[g.index][: removed[g.index]]] = False
        set_channels(out, g, keep)
    return PruneResult(out, notes)
