"""Latency in interleaved rounds, with bootstrap intervals.

Every session is warmed up first. Then ``rounds`` rounds: each round times every model
(baseline included) for a block of runs, in an order shuffled per round and reversed in the
next (ABBA), so that drift of a shared machine (another process, the clock, the caches) falls
on all models alike instead of on whichever model happened to run during it. Each block starts
with untimed runs (at least 2, and for at least 50 ms): the switch from the previous model leaves
the new session's threads asleep and the old one's spinning. Each run is a full ``session.run`` on a fixed
random batch. p50, p90, mean and min are over all runs of a model; the 95% interval of p50
and of a speed-up comes from a bootstrap (the same resampled rounds for both models of a
ratio, which pairs them). When a model was timed through several sessions of its file (round
``r`` runs session ``r % n``), the bootstrap is two-stage: sessions first, then rounds within
each drawn session, so that what stays fixed for a session's life (where its arena and weights
landed in memory) widens the interval. Without sessions it resamples rounds, or runs when there
are fewer than 4 rounds. Throughput is images per second at the p50.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; os.cpu_count() where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    pairs, phys, core = set(), None, None
    for line in text.splitlines() + [""]:
        if line.startswith("physical id"):
            phys = line.split(":")[1].strip()
        elif line.startswith("core id"):
            core = line.split(":")[1].strip()
        elif not line.strip():
            if core is not None:
                pairs.add((phys, core))
            phys = core = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(pairs) or affinity, affinity))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarize(times_ms: list[float], batch: int) -> dict:
    s = sorted(times_ms)
    p50 = statistics.median(s)
    return {
        "batch": batch,
        "runs": len(s),
        "p50": p50,
        "p90": float(np.percentile(s, 90)),
        "mean": statistics.fmean(s),
        "min": s[0],
        "images_per_s": batch * 1000.0 / p50 if p50 > 0 else float("inf"),
    }


def isa_flags() -> dict[str, bool]:
    """The CPU's vector ISA as /proc/cpuinfo lists it: what decides fp32 and INT8 kernels in ORT."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    return {"avx2": "avx2" in flags, "fma": "fma" in flags, "avx512f": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags,
            "amx_int8": "amx_int8" in flags, "neon": "asimd" in flags}


def measure(sess, input_size: tuple[int, int], batch: int = 1, runs: int = 50, warmup: int = 5, seed: int = 0) -> dict:
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(seed).standard_normal((batch, 3, *input_size)).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1000.0)
    return summarize(times, batch)


BOOTSTRAP = 2000
# Untimed runs at the start of every block, at least BLOCK_WARMUP of them and for at least
# BLOCK_WARMUP_MS: after a switch of sessions, the new session's threads wake and the old one's
# are still spinning. Measured on FCRN-ResNet18 at 228x304 pruned to 4% density (2 threads, 10
# models' sessions alternating): the first 5 runs of a block took 8.6, 7.3, 6.1, 6.1, 5.3 ms,
# then 4.6 ms steady (about 30 ms of disturbance); the first two runs of a 0.5 ms model ran
# 15-30% slow.
BLOCK_WARMUP, BLOCK_WARMUP_MS, BLOCK_WARMUP_MAX = 2, 50.0, 1000
MIN_ROUNDS_FOR_ROUND_BOOTSTRAP = 4


def alternating_pools(n_models: int, per_model: int, make, seed: int = 0) -> list[list]:
    """``per_model`` sessions of each of ``n_models`` models, ``make(k)`` making one of model
    ``k``: made in turns, one per model a turn, in a shuffled order reversed every other turn. A
    session made later ran ~1% faster for its whole life on this machine (a byte-identical copy
    made after the baseline in every turn benched at 1.011x, sd 0.004, over 12 runs), so no model
    may be made first every time; the alternation turns that effect into a difference between
    sessions, which the two-stage bootstrap draws."""
    rng = np.random.default_rng(seed)
    pools: list[list] = [[] for _ in range(n_models)]
    order = rng.permutation(n_models)
    for turn in range(per_model):
        order = rng.permutation(n_models) if turn % 2 == 0 else order[::-1]
        for k in order:
            pools[k].append(make(int(k)))
    return pools


def interleaved(sessions: list[tuple[object, tuple[int, int]]], batch: int, rounds: int, runs: int, warmup: int,
                seed: int = 0, timer=time.perf_counter) -> list[np.ndarray]:
    """Times in ms, one (rounds, runs_per_round) array per model; every round times every model
    for a block of ``ceil(runs / rounds)`` runs after ``BLOCK_WARMUP`` untimed ones, in an order
    shuffled on even rounds and reversed on odd ones. Models of the same input name and size read
    one input buffer.

    A model may be given as a list of sessions of the same file: round ``r`` then runs session
    ``r % len``, so that what differs between sessions (where ORT's arena and the weights landed
    in memory: a byte-identical copy can sit a few percent apart for a session's whole life)
    varies between rounds and reaches the bootstrap's interval instead of biasing the point.
    """
    rng = np.random.default_rng(seed)
    per_round = max(1, -(-runs // rounds))
    pools = [s if isinstance(s, list | tuple) else [s] for s, _ in sessions]
    inputs: dict[tuple, dict] = {}  # one input buffer per (input name, size): models alike read the same bytes
    feeds = []
    for pool, (_, size) in zip(pools, sessions, strict=True):
        key = (pool[0].get_inputs()[0].name, tuple(size))
        if key not in inputs:
            inputs[key] = {key[0]: np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)}
        feeds.append(inputs[key])
    for pool, feed in zip(pools, feeds, strict=True):
        for sess in pool:
            for _ in range(warmup):
                sess.run(None, feed)
    times = [np.zeros((rounds, per_round)) for _ in sessions]
    order = rng.permutation(len(sessions))
    for r in range(rounds):
        # counterbalanced (ABBA): a fresh shuffle on even rounds, its reverse on odd ones, so that
        # every model runs first and last in a round equally often
        order = rng.permutation(len(sessions)) if r % 2 == 0 else order[::-1]
        for k in order:
            sess, feed = pools[k][r % len(pools[k])], feeds[k]
            t_end, n = timer() + BLOCK_WARMUP_MS / 1000.0, 0
            while n < BLOCK_WARMUP or (timer() < t_end and n < BLOCK_WARMUP_MAX):  # see BLOCK_WARMUP
                sess.run(None, feed)
                n += 1
            for j in range(per_round):
                t0 = timer()
                sess.run(None, feed)
                times[k][r, j] = (timer() - t0) * 1000.0
    return times


def _resampled(n_rounds: int, n_runs: int, seed: int, sessions: int = 1) -> tuple[str, np.ndarray]:
    """Bootstrap index sets: sessions then rounds within them when there are several sessions
    (round ``r`` ran session ``r % sessions``) and at least two rounds each; else whole rounds
    when there are enough of them; else single runs."""
    rng = np.random.default_rng(seed)
    per = n_rounds // sessions if sessions > 1 else 0
    if per >= 2:
        drawn = rng.integers(0, sessions, size=(BOOTSTRAP, sessions, 1))
        within = rng.integers(0, per, size=(BOOTSTRAP, sessions, per))
        return "sessions, then rounds", (drawn + sessions * within).reshape(BOOTSTRAP, sessions * per)
    if n_rounds >= MIN_ROUNDS_FOR_ROUND_BOOTSTRAP:
        return "rounds", rng.integers(0, n_rounds, size=(BOOTSTRAP, n_rounds))
    return "runs", rng.integers(0, n_rounds * n_runs, size=(BOOTSTRAP, n_rounds * n_runs))


def _boot_p50(times: np.ndarray, kind: str, idx: np.ndarray) -> np.ndarray:
    if kind == "runs":
        return np.median(times.ravel()[idx], axis=1)
    return np.median(times[idx].reshape(len(idx), -1), axis=1)


def latency_stats(times: np.ndarray, batch: int, seed: int = 0, sessions: int = 1) -> dict:
    """p50, p90, mean, min over all runs, and the bootstrap 95% interval of p50."""
    out = summarize(times.ravel().tolist(), batch)
    kind, idx = _resampled(*times.shape, seed, sessions)
    lo, hi = np.percentile(_boot_p50(times, kind, idx), [2.5, 97.5])
    out.update({"p50_ci": [float(lo), float(hi)], "rounds": int(times.shape[0]),
                "runs_per_round": int(times.shape[1]), "sessions": int(sessions), "bootstrap": kind})
    return out


def speedup_with_interval(base: np.ndarray, model: np.ndarray, seed: int = 0,
                          sessions: int = 1) -> tuple[float, list[float]]:
    """base p50 / model p50, and its 95% interval from the same resampled rounds for both (paired);
    with several sessions per model, sessions are drawn first (the same for both)."""
    point = float(np.median(base) / np.median(model))
    kind, idx = _resampled(*base.shape, seed, sessions)
    ratios = _boot_p50(base, kind, idx) / _boot_p50(model, kind, idx)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return point, [float(lo), float(hi)]
