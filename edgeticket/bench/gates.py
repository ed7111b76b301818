"""Deployment gates: ``--gate "delta1_drop<=0.01,speedup>=2"``.

Comma means AND; the operators are <=, >=, <, >. ``<metric>_drop`` is baseline - model for
delta1..3; ``<metric>_rise`` is model - baseline for the error metrics; ``speedup``,
``size_ratio`` and ``macs_ratio`` are the ratios against the baseline. A figure with an
interval (``speedup_ci``) is judged on its point estimate and marked "within noise" when the
interval straddles the threshold; ``--gate-strict`` judges it on the interval's far end.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from edgeticket.errors import UserError

ERROR_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10")
DELTA_METRICS = ("delta1", "delta2", "delta3")
RATIOS = ("speedup", "size_ratio", "macs_ratio")
KEYS = tuple(f"{m}_drop" for m in DELTA_METRICS) + tuple(f"{m}_rise" for m in ERROR_METRICS) + RATIOS
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_GATE = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    key: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"

    def holds(self, actual: float) -> bool:
        return OPS[self.op](actual, self.value)


class Gates(tuple):
    """The parsed ``--gate`` value: Gate objects, AND-ed; ``str()`` gives the text back."""

    @classmethod
    def parse(cls, text: str | Gates) -> Gates:
        if isinstance(text, Gates):
            return text
        if not isinstance(text, str):
            raise ValueError("write KEY<=VALUE, e.g. delta1_drop<=0.01,speedup>=2")
        gates = []
        for part in text.split(",") if text.strip() else []:
            m = _GATE.match(part)
            if not m:
                raise ValueError(f"{part.strip()!r}: write KEY<=VALUE (or >=, <, >), e.g. delta1_drop<=0.01,speedup>=2")
            key, op, value = m.group(1), m.group(2), float(m.group(3))
            if key not in KEYS:
                raise ValueError(f"unknown key {key!r}; use one of {', '.join(KEYS)}")
            gates.append(Gate(key, op, value))
        return cls(gates)

    def __str__(self) -> str:
        return ",".join(map(str, self))

    def to_json(self) -> str:
        return str(self)


def parse_gates(text: str | None) -> Gates:
    """``--gate`` text -> Gates; a bad gate is a UserError naming it."""
    try:
        return Gates.parse(text or "")
    except ValueError as e:
        raise UserError(f"--gate {text!r}: {e}.") from None


def gate_value(key: str, vs_baseline: dict) -> float:
    if key in RATIOS:
        return vs_baseline[key]
    metric, kind = key.rsplit("_", 1)
    delta = vs_baseline["metrics_delta"][metric]  # model - baseline
    return -delta if kind == "drop" else delta


def gate_interval(key: str, vs_baseline: dict) -> list[float] | None:
    """The 95% interval of a gated figure where the bench measured one (``speedup_ci``)."""
    ci = vs_baseline.get(f"{key}_ci")
    return list(ci) if ci else None


def _far_end(g: Gate, ci: list[float]) -> float:
    """The end of the interval least favourable to passing."""
    return ci[0] if g.op in (">=", ">") else ci[1]


def judge_gates(gates: list[Gate], entry: dict, strict: bool = False) -> tuple[list[str], list[str]]:
    """(failed, within_noise): each as 'key=actual [lo, hi] fails key<op>value'.

    A gate decides on the point estimate; where the figure's interval straddles the threshold
    the verdict is marked "within noise". ``strict`` decides on the interval's far end instead.
    """
    failed, noisy = [], []
    for g in gates:
        actual = gate_value(g.key, entry["vs_baseline"])
        if actual is None:
            failed.append(f"{g.key} is unknown (the model or the baseline has no edgeticket metadata) and fails {g}")
            continue
        ci = gate_interval(g.key, entry["vs_baseline"])
        shown = f"{g.key}={actual:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")
        straddles = ci is not None and g.holds(ci[0]) != g.holds(ci[1])
        ok = g.holds(_far_end(g, ci)) if strict and ci else g.holds(actual)
        verdict = f"{shown} {'passes' if ok else 'fails'} {g}"
        if straddles:
            verdict += " (strict: on the interval's far end)" if strict else " (within noise)"
            noisy.append(verdict)
        if not ok:
            failed.append(verdict)
    return failed, noisy


def check_gates(gates: list[Gate], entry: dict, strict: bool = False) -> list[str]:
    """The gates an entry fails, each as 'key=actual fails key<op>value'."""
    return judge_gates(gates, entry, strict)[0]
