"""Shared fixtures: a small synthetic dataset in the official layout and its training cache.

Shared helpers (tiny settings, the real NYU sample files) are in ``helpers.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import SIZE

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
    from edgeticket.data.config import DataConfig
    from edgeticket.data.prepare import prepare

    return prepare(synth_dir, tmp_path_factory.mktemp("cache") / "c", DataConfig(input_size=SIZE, val_fraction=0.15),
                   progress=False)


@pytest.fixture(scope="session")
def prepared(cache):
    from edgeticket.data.dataset import PreparedData

    return PreparedData(cache)


def pytest_terminal_summary(terminalreporter):
    """The fault suite's counts, so they can be quoted: kill points, bad inputs, corrupted files."""
    import sys

    faults = sys.modules.get("test_faults")
    if faults is not None and faults.COUNTS["kill_points_tried"] + faults.COUNTS["bad_inputs_tried"]:
        terminalreporter.write_line(f"faults: {faults.pytest_terminal_summary_counts()}")
