"""The public Python API: importable from the package, typed, and the README's script runs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import edgeticket as et

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_is_importable_from_the_package():
    for name in ("finetune", "search", "export", "bench", "run_branches", "import_ticket", "run_pipeline", "prepare"):
        assert callable(getattr(et, name)), name
    for name in ("TrainConfig", "FinetuneConfig", "SearchConfig", "ExportConfig", "BenchConfig", "DataConfig",
                 "ModelConfig", "BranchConfig", "Mask", "InputSize", "RewindPoint", "ModelCard"):
        assert isinstance(getattr(et, name), type), name
    import edgeticket.bench.api  # noqa: F401
    import edgeticket.export.api  # noqa: F401 - importing the subpackage must not hide the function

    assert callable(et.export) and callable(et.bench)


def test_the_api_takes_typed_values_not_text():
    with pytest.raises(TypeError, match="InputSize"):
        et.DataConfig(input_size="48x64")
    assert et.DataConfig(input_size=(48, 64)).input_size == et.InputSize(48, 64)
    with pytest.raises(TypeError, match="RewindPoint"):
        et.SearchConfig(rewind="epoch:1")
    with pytest.raises(et.UserError, match="--lr nan"):
        et.TrainConfig(lr=float("nan"))


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- api-script -->\n```python\n(.*?)```", text, flags=re.S)
    assert m, "README.md has no api-script block"
    return m.group(1)


@pytest.mark.slow
def test_the_readme_script_runs(tmp_path):
    script = readme_script()
    assert len(script.strip().splitlines()) <= 16
    (tmp_path / "script.py").write_text(script)
    proc = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    speedups = ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # the script prints a dict literal
    assert set(speedups) == {"dense", "ticket", "ticket int8"} and speedups["dense"] == "1.00x"
    assert (tmp_path / "runs/api/bench/report.json").exists()
