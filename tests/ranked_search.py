"""Run ``edgeticket`` in each torchrun rank with the fake latency machine, recording what each rank did.

    torchrun --nproc_per_node 2 tests/ranked_search.py RECORD_DIR search ...

Each rank writes ``RECORD_DIR/rank{R}.json``: how many times it timed something (the table and the
calibration), and the latency model it searched with.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_latency  # noqa: E402

import edgeticket.tickets.imp as imp  # noqa: E402

record, args = Path(sys.argv[1]), sys.argv[2:]
rank = os.environ.get("RANK", "0")
calls = []
fake_latency.install(on_call=lambda: calls.append(1))
opened = imp.open_budget


def open_budget(ctx):
    budget = opened(ctx)
    lm = budget.model
    (record / f"rank{rank}.json").write_text(json.dumps(
        {"timed": len(calls), "a": lm.a, "b": lm.b, "p": lm.p, "dense_ms": lm.dense_ms,
         "table": json.dumps(lm.table, sort_keys=True), "allocation": budget.allocation}))
    return budget


imp.open_budget = open_budget

from edgeticket.cli.app import main  # noqa: E402

sys.argv = ["edgeticket", *args]
main()
