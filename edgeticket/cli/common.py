"""What every command shares: error handling, the options that are not settings, printing."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeticket.errors import Interrupted, UserError
from edgeticket.train.config import DEVICE_HELP


def err(message: str) -> None:
    typer.echo(f"edgeticket: error: {message}", err=True)


def handled(fn):
    """A user's mistake becomes one sentence and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err(str(e))
            raise typer.Exit(e.exit_code) from None
        except Interrupted as e:
            typer.echo(f"edgeticket: {e}", err=True)
            code = 143 if "SIGTERM" in str(e) else 130
            raise typer.Exit(code) from None
        except OSError as e:
            import errno

            from edgeticket.runs import disk_error

            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):  # a write the disk refused
                raise
            err(str(disk_error(Path(e.filename).parent if e.filename else "the output folder", e)))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("edgeticket: interrupted.", err=True)
            raise typer.Exit(130) from None

    return wrapper


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


# -- options that are not settings: where a run goes and how it talks -----------------------------
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue a killed or stopped run in --out from its last checkpoint (starts from the beginning when nothing was saved yet).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what --out holds.")]


def console():
    """A rich console; off a terminal (logs, CI) wide enough that tables are not truncated."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=180)


def print_metrics_table(title: str, rows: list[tuple[str, dict]]) -> None:
    from rich.table import Table

    from edgeticket.train.metrics import METRIC_KEYS

    t = Table(title=title)
    t.add_column("split")
    for k in METRIC_KEYS:
        t.add_column(k, justify="right")
    for name, m in rows:
        if m:
            t.add_row(name, *[f"{m[k]:.4f}" for k in METRIC_KEYS])
    console().print(t)
