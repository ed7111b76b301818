"""Shared fixtures: a small synthetic dataset in the official layout and its training cache.

Everything is tiny (fcrn_tiny, 48x64 inputs) so the suite runs in minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu"
SIZE = (48, 64)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """24 synthetic rooms at 640x480, written by the real generator (official layout)."""
    from edgeticket.data.synth import write_synthetic

    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, 24, seed=0, progress=False, workers=2)
    return out


@pytest.fixture(scope="session")
def cache(synth_dir, tmp_path_factory) -> Path:
    """The synthetic set prepared at 48x64."""
    from edgeticket.data.prepare import prepare

    return prepare(synth_dir, tmp_path_factory.mktemp("cache") / "c", SIZE, val_fraction=0.15, progress=False)


@pytest.fixture(scope="session")
def prepared(cache):
    from edgeticket.data.dataset import PreparedData

    return PreparedData(cache)


def tiny_train_config(**kw):
    from edgeticket.train.trainer import TrainConfig

    base = dict(epochs=2, batch_size=4, lr=0.01, eval_batch_size=8, warmup_epochs=0.0)
    base.update(kw)
    return TrainConfig(**base)


def shared_nyu() -> Path:
    if not (SHARED_NYU / "test_first10").is_dir():
        pytest.skip("../shared/data/nyu is not present in this checkout")
    return SHARED_NYU


def pytest_terminal_summary(terminalreporter):
    """The fault suite's counts, so they can be quoted: kill points, bad inputs, corrupted files."""
    import sys

    faults = sys.modules.get("test_faults")
    if faults is not None and faults.COUNTS["kill_points_tried"] + faults.COUNTS["bad_inputs_tried"]:
        terminalreporter.write_line(f"faults: {faults.pytest_terminal_summary_counts()}")
