"""The ``edgeticket`` command: thin Typer commands over the Python API.

``data`` and ``tickets`` are command groups; ``search``, ``finetune``, ``export``, ``bench``,
``demo`` and ``pipeline`` are plain commands. The commands live by theme in ``cli/data.py``,
``cli/train.py``, ``cli/tickets.py`` and ``cli/deploy.py``; their settings options are
generated from the stages' dataclasses (``cli/options.py``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgeticket import __version__
from edgeticket.cli import data, deploy, tickets, train

app = typer.Typer(
    name="edgeticket",
    help="Lottery tickets for monocular depth: IMP search on FCRN, fine-tuning on NYU Depth v2, "
         "structural compaction, ONNX export and an ONNX Runtime benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
data_app = typer.Typer(help="Datasets: synthetic rooms, NYU download, the training cache.", no_args_is_help=True)
tickets_app = typer.Typer(help="Tickets: import published masks, branch baselines, refill, show.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tickets_app, name="tickets")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeticket {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """edgeticket: find, fine-tune, compact, export and benchmark lottery tickets of FCRN depth models."""


COMMANDS = [  # (group, name, function)
    (data_app, "synth", data.data_synth), (data_app, "prepare", data.data_prepare), (data_app, "fetch", data.data_fetch),
    (app, "finetune", train.finetune), (app, "search", train.search),
    (tickets_app, "import", tickets.tickets_import), (tickets_app, "show", tickets.tickets_show),
    (tickets_app, "branch", tickets.tickets_branch), (tickets_app, "refill", tickets.tickets_refill),
    (app, "export", deploy.export), (app, "bench", deploy.bench), (app, "pipeline", deploy.pipeline),
    (app, "demo", deploy.demo),
]
for _group, _name, _fn in COMMANDS:
    _group.command(_name)(_fn)


def main() -> None:
    from edgeticket import faults

    faults.point("start")
    app()


if __name__ == "__main__":
    main()
