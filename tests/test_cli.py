"""The command line: its shape, the README's commands, and clean errors."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeticket import __version__
from edgeticket.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_top_level_lists_every_command():
    out = run("--help").output
    for cmd in ("data", "tickets", "search", "finetune", "export", "bench", "demo", "pipeline"):
        assert re.search(rf"\b{cmd}\b", out), cmd
    assert run("--version").output.strip() == f"edgeticket {__version__}"


@pytest.mark.parametrize("cmd, options", [
    (["data", "synth"], ["--n", "--seed", "--out", "--preset", "--views"]),
    (["data", "prepare"], ["--out", "--input-size", "--val-fraction", "--val-carve"]),
    (["data", "fetch"], ["--out", "--sha256"]),
    (["finetune"], ["--data", "--arch", "--pretrained", "--mask", "--input-size", "--epochs", "--out", "--device", "--resume",
                    "--overwrite", "--init-from", "--start-step", "--val-carve"]),
    (["search"], ["--data", "--arch", "--pretrained", "--levels", "--epochs", "--criterion", "--out", "--input-size",
                  "--device", "--resume", "--target-sparsity", "--scope", "--rewind", "--round-to", "--overwrite"]),
    (["tickets", "import"], ["--arch", "--out", "--allow-pickle"]),
    (["tickets", "branch"], ["--level", "--seeds", "--sparsity"]),
    (["tickets", "refill"], ["--level"]),
    (["tickets", "show"], []),
    (["export"], ["--onnx", "--compact", "--no-compact", "--int8", "--data", "--out", "--reduce-range", "--calib-method",
                  "--calib-images", "--drift-split", "--allow-constant", "--int8-fp32-head"]),
    (["bench"], ["--data", "--baseline", "--out", "--gate", "--input-size", "--mean", "--std", "--runs", "--threads",
                 "--rounds", "--gate-strict", "--spin"]),
    (["demo"], ["--out"]),
    (["pipeline"], ["--out"]),
])
def test_every_command_has_its_options(cmd, options):
    res = run(*cmd, "--help")
    assert res.exit_code == 0, res.output
    for opt in options:
        assert opt in res.output, (cmd, opt)


def _commands():
    """(path, our command function, click command) for every command of the app."""
    import typer.main

    root = typer.main.get_command(app)
    groups = {"": app, **{g.name: g.typer_instance for g in app.registered_groups}}
    for gname, tapp in groups.items():
        for info in tapp.registered_commands:
            click_cmd = root.commands[gname].commands[info.name] if gname else root.commands[info.name]
            yield f"{gname} {info.name}".strip(), info.callback, click_cmd


def test_cli_defaults_are_the_dataclass_defaults():
    """Every option generated from a settings field takes, parsed as the CLI parses it, the field's default."""
    from edgeticket.hparams import parse_value

    checked = 0
    for name, fn, click_cmd in _commands():
        params = {p.name: p for p in click_cmd.params}
        for spec in getattr(fn, "option_specs", []):
            f = spec.field
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                assert params[spec.param].required, (name, spec.flag)
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            click_default = params[spec.param].default
            assert parse_value(spec.owner, f, click_default) == default, (name, spec.flag, click_default, default)
            assert spec.flag in params[spec.param].opts, (name, spec.flag)
            checked += 1
    assert checked > 80  # finetune and search alone bring over 30 options each


def test_device_defaults_to_auto_everywhere():
    import inspect

    from edgeticket.train.config import DEFAULT_DEVICE

    assert DEFAULT_DEVICE == "auto"
    for name, _fn, click_cmd in _commands():
        for p in click_cmd.params:
            if p.name == "device" and name not in ("pipeline", "demo"):  # those override the config's [run] device
                assert p.default == DEFAULT_DEVICE, name
    import edgeticket as et

    for fn in (et.finetune, et.search, et.run_branches):
        assert inspect.signature(fn).parameters["device"].default == DEFAULT_DEVICE
    from edgeticket.pipeline.config import RunSection

    assert RunSection().device == DEFAULT_DEVICE


def test_finetune_and_search_share_the_training_options():
    specs = {name: {s.flag for s in getattr(fn, "option_specs", []) if s.path[1] == "train"}
             for name, fn, _ in _commands() if name in ("finetune", "search")}
    assert specs["finetune"] == specs["search"] and {"--epochs", "--lr", "--channels-last", "--compile"} <= specs["search"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            m = re.search(r"(?:^|\s)(edgeticket\s.*)$", line)
            if m and not line.startswith("#"):
                cmds.append(m.group(1).split(" #")[0].strip())
    return cmds


def test_readme_commands_are_copy_paste_correct():
    """Every `edgeticket ...` line of the README names a real command and only its real options."""
    cmds = readme_commands()
    assert len(cmds) >= 10
    groups = {"data", "tickets"}
    for line in cmds:
        argv = shlex.split(line)[1:]
        path = argv[:2] if argv and argv[0] in groups else argv[:1]
        if path in (["--version"], ["--help"]):
            continue
        res = run(*path, "--help")
        assert res.exit_code == 0, (line, res.output)
        for opt in [a.split("=")[0] for a in argv if a.startswith("--")]:
            assert opt in res.output, f"README: {line}: {opt} is not an option of {' '.join(path)}"


def test_synth_and_prepare_on_tiny_data(tmp_path):
    res = run("data", "synth", "--n", "8", "--out", tmp_path / "rooms", "--quiet")
    assert res.exit_code == 0, res.output
    assert "wrote 8 frames" in res.output
    res = run("data", "prepare", tmp_path / "rooms", "--out", tmp_path / "cache", "--input-size", "32x48", "--quiet")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cache" / "cache.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["finetune", "--data", "/no/such/dir", "--out", "OUT"], "--data /no/such/dir"),
    (["finetune", "--data", "DATA", "--out", "OUT", "--arch", "fcrn_vgg"], "--arch 'fcrn_vgg'"),
    (["finetune", "--data", "DATA", "--out", "OUT", "--lr", "-1"], "--lr -1"),
    (["finetune", "--data", "DATA", "--out", "OUT", "--input-size", "228by304"], "--input-size '228by304'"),
    (["search", "--data", "DATA", "--out", "OUT", "--levels", "0"], "--levels 0"),
    (["search", "--data", "DATA", "--out", "OUT", "--criterion", "snip"], "--criterion 'snip'"),
    (["search", "--data", "DATA", "--out", "OUT", "--target-sparsity", "1.2"], "--target-sparsity 1.2"),
    (["search", "--data", "DATA", "--out", "OUT", "--rate", "-0.2"], "--rate -0.2"),
    (["bench", "M.onnx", "--data", "DATA", "--baseline", "M.onnx", "--out", "OUT", "--gate", "speedup=2"], "--gate 'speedup=2'"),
    (["tickets", "show", "/no/mask.pt"], "/no/mask.pt"),
    (["data", "synth", "--n", "3", "--out", "OUT"], "--n"),
    (["data", "synth", "--n", "8", "--views", "8", "--out", "OUT"], "--views 8"),
    (["data", "prepare", "DATA", "--out", "OUT", "--val-carve", "room"], "--val-carve 'room'"),
    (["finetune", "--data", "DATA", "--out", "OUT", "--start-step", "pretrained"], "--start-step 'pretrained'"),
    (["finetune", "--data", "DATA", "--out", "OUT", "--init-from", "/no/start.pt"], "--init-from /no/start.pt"),
])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, argv, needle):
    (tmp_path / "DATA").mkdir()
    argv = [a.replace("DATA", str(tmp_path / "DATA")).replace("OUT", str(tmp_path / "OUT")) for a in argv]
    res = run(*argv)
    assert res.exit_code == 2, res.output
    err = res.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgeticket: error: ") and needle in err[0], res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "OUT").exists() or not any((tmp_path / "OUT").iterdir())


def test_console_script_exits_2_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("edgeticket")
    proc = subprocess.run([str(exe), "search", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--levels", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "edgeticket: error: --levels 0: give at least 1 (level 0 is the dense model)."


def test_search_trains_at_the_cache_size_without_input_size(cache, tmp_path):
    """Prepared at 48x64, searched without --input-size: finetune and search both follow the cache."""
    import json

    common = ["--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", "1", "--batch-size", "4",
              "--quiet"]
    res = run("search", *common, "--levels", "1", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s" / "search.json").read_text())["config"]["data"]["input_size"] == [48, 64]
    res = run("finetune", *common, "--out", tmp_path / "f")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "f" / "meta.json").read_text())["input_size"] == [48, 64]


def test_a_bad_rewind_point_is_refused_before_anything_is_written(cache, tmp_path):
    base = ["search", "--data", cache, "--arch", "fcrn_tiny", "--pretrained", "none", "--epochs", "1", "--quiet",
            "--out", tmp_path / "s"]
    for rewind, needle in (("epoch:5", "level 0 trains 1 epochs"), ("step:999", "choose a rewind point inside")):
        res = run(*base, "--rewind", rewind)
        assert res.exit_code == 2 and needle in res.output, res.output
        assert not (tmp_path / "s").exists()
    res = run(*base, "--rewind", "step:1", "--levels", "1")  # the corrected rerun is not refused as "not empty"
    assert res.exit_code == 0, res.output
