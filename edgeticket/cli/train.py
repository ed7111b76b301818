"""``edgeticket finetune`` and ``edgeticket search``: their options come from the settings dataclasses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeticket.cli.common import (
    Device,
    Overwrite,
    Quiet,
    Resume,
    handled,
    print_metrics_table,
    progress_enabled,
)
from edgeticket.cli.options import config_options
from edgeticket.tickets.config import SearchConfig
from edgeticket.train.config import DEFAULT_DEVICE, FinetuneConfig

DataOption = Annotated[Path, typer.Option("--data", help="A dataset folder (official layout or nyu2 PNGs) or a prepared cache.")]


@handled
@config_options(config=FinetuneConfig)
def finetune(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="The model directory to write.")],
    mask: Annotated[Path | None, typer.Option("--mask", help="A ticket: mask.pt or a search level/branch directory.")] = None,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Start from these weights instead of the pretrained ones: a model directory or a weights "
        "file, e.g. a search's start.pt, init.pt or level_00/rewind.pt (the fair start of its tickets).")] = None,
    start_step: Annotated[str, typer.Option(
        "--start-step", help="Begin at this step of the schedule and data order, for weights already trained that "
        "far: a step number, or a search's late rewinding point epoch:K / step:K.")] = "0",
    device: Device = DEFAULT_DEVICE,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    *,
    config: FinetuneConfig,
):
    """Fine-tune a dense FCRN or a ticket on NYU Depth v2 (berHu loss); torchrun for several GPUs."""
    from edgeticket.tickets.mask import Mask
    from edgeticket.train import distributed as D
    from edgeticket.train.finetune import finetune as run

    ticket = Mask.load(mask) if mask is not None else None
    res = run(data, out, config, mask=ticket, init_from=init_from, start_step=_start_step(start_step), device=device,
              resume=resume, overwrite=overwrite, progress=progress_enabled(quiet))
    if D.current().is_main:
        print_metrics_table(f"{config.model.arch} -> {out} (best epoch {res.best_epoch + 1}, "
                            f"{res.images_per_s:.1f} img/s)", [("val", res.val), ("test", res.test)])


@handled
@config_options(config=SearchConfig)
def search(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="The search folder: level_00 .. level_{N-1}.")],
    device: Device = DEFAULT_DEVICE,
    resume: Resume = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    *,
    config: SearchConfig,
):
    """Iterative magnitude pruning with rewinding: unstructured or channel tickets, level by level."""
    from edgeticket import paths
    from edgeticket.tickets.imp import search as run
    from edgeticket.tickets.summary import format_table
    from edgeticket.train import distributed as D

    summary = run(data, out, config, device=device, resume=resume, overwrite=overwrite,
                  progress=progress_enabled(quiet))
    if D.current().is_main:
        typer.echo(format_table(summary["rows"]))
        if summary.get("target"):
            typer.echo(summary["target"]["message"])
        typer.echo(f"summary: {Path(out) / paths.SUMMARY_MD}, plot: {Path(out) / paths.SUMMARY_PNG}")


def _start_step(text: str):
    """--start-step: a step number, or epoch:K / step:K (counted in the run's own steps)."""
    from edgeticket.errors import UserError
    from edgeticket.tickets.rewind import RewindPoint

    if text.strip().isdigit():
        return int(text)
    try:
        point = RewindPoint.parse(text)
    except ValueError:
        point = None
    if point is None or not point.late:
        raise UserError(f"--start-step {text!r}: give a step number, epoch:K or step:K.")
    return point
