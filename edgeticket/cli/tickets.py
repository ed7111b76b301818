"""``edgeticket tickets``: import published masks, branch baselines, refill, show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeticket.cli.common import Device, Overwrite, Quiet, console, handled, progress_enabled
from edgeticket.cli.options import config_options
from edgeticket.models.config import ModelConfig
from edgeticket.tickets.config import BranchConfig
from edgeticket.train.config import DEFAULT_DEVICE

SearchDir = Annotated[Path, typer.Argument(help="The search's --out folder.")]


@handled
@config_options(model=ModelConfig, only={"model": ("arch",)})
def tickets_import(
    path: Annotated[Path, typer.Argument(help="A mask dict {name.weight_mask: tensor} or a torch.nn.utils.prune checkpoint (.pth, .pth.tar).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write mask.pt into.")] = Path("ticket"),
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Load a file that needs pickle (it can run code): only for files you trust.")] = False,
    overwrite: Overwrite = False,
    *,
    model: ModelConfig,
):
    """Import a published ImageNet ticket onto an FCRN's encoder (the decoder stays dense)."""
    from edgeticket import paths
    from edgeticket.tickets.formats import import_ticket

    mask, notes = import_ticket(path, out, arch=model.arch, allow_pickle=allow_pickle, overwrite=overwrite)
    for n in notes:
        typer.echo(f"note: {n}")
    show_mask(mask, f"{out / paths.MASK} (from {path})")


@handled
def tickets_show(path: Annotated[Path, typer.Argument(help="mask.pt, or a directory holding one.")],
                 as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False):
    """Print a ticket's per-layer and total sparsity (effective: masked or in a dead channel)."""
    from edgeticket.tickets.mask import Mask
    from edgeticket.tickets.sparsity import ticket_report

    mask = Mask.load(path)
    if as_json:
        typer.echo(json.dumps(ticket_report(mask), indent=2))
    else:
        show_mask(mask, str(path))


def show_mask(mask, title: str) -> None:
    from rich.table import Table

    from edgeticket.tickets.sparsity import ticket_report

    rep = ticket_report(mask)
    t = Table(title=title)
    for c in ("layer", "shape", "sparsity", "mask sparsity", "channels alive"):
        t.add_column(c, justify="left" if c in ("layer", "shape") else "right")
    for name, r in rep["layers"].items():
        t.add_row(name, "x".join(map(str, r["shape"])), f"{r['sparsity']:.3f}", f"{r['mask_sparsity']:.3f}",
                  f"{r['channels_alive']}/{r['channels']}")
    tot = rep["total"]
    t.add_row("total", f"{tot['weights']} weights", f"{tot['sparsity']:.3f}", f"{tot['mask_sparsity']:.3f}",
              f"{tot['channels_alive']}/{tot['channels']}")
    console().print(t)


def _print_branches(results: list[dict]) -> None:
    for r in results:
        typer.echo(f"{r['branch']}: {r['status']} -> {r['path']}")


@handled
@config_options(branch=BranchConfig)
def tickets_branch(
    kind: Annotated[str, typer.Argument(help="random, reverse, reinit or oneshot.")],
    search_dir: SearchDir,
    device: Device = DEFAULT_DEVICE,
    quiet: Quiet = False,
    *,
    branch: BranchConfig,
):
    """Train a baseline beside a level: random pruning, the reverse mask, re-initialisation or one-shot pruning."""
    from edgeticket import paths
    from edgeticket.errors import UserError
    from edgeticket.tickets.branches import run_branches

    if kind == "refill":
        raise UserError("refill has its own command: edgeticket tickets refill DIR --level NN.")
    _print_branches(run_branches(search_dir, kind, branch, device=device, progress=progress_enabled(quiet)))
    typer.echo(f"summary: {search_dir / paths.SUMMARY_MD}")


@handled
@config_options(branch=BranchConfig, only={"branch": ("level",)})
def tickets_refill(
    search_dir: Annotated[Path, typer.Argument(help="The search's --out folder (an unstructured search).")],
    device: Device = DEFAULT_DEVICE,
    quiet: Quiet = False,
    *,
    branch: BranchConfig,
):
    """Turn an unstructured ticket into a channel ticket by IMP-Refill's rule (each group keeps int(alive / filter size) whole channels) and train it as branch_refill."""
    from edgeticket.tickets.branches import run_branches

    _print_branches(run_branches(search_dir, "refill", branch, device=device, progress=progress_enabled(quiet)))
