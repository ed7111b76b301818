"""What every command shares: error handling, option types, printing."""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer

from edgeticket.errors import Interrupted, UserError


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
        except KeyboardInterrupt:
            typer.echo("edgeticket: interrupted.", err=True)
            raise typer.Exit(130) from None

    return wrapper


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


# -- shared option types ----------------------------------------------------------------------
Device = Annotated[str, typer.Option("--device", help="cpu or cuda (cuda needs a GPU).")]
InputSize = Annotated[str | None, typer.Option("--input-size", help="HEIGHTxWIDTH of the model input, e.g. 228x304 (default: the cache's, or 228x304).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue a killed or stopped run in --out from its last checkpoint (starts from the beginning when nothing was saved yet).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what --out holds.")]
Arch = Annotated[str, typer.Option("--arch", help="fcrn_resnet50, fcrn_resnet34, fcrn_resnet18 or fcrn_tiny.")]
Pretrained = Annotated[str, typer.Option("--pretrained", help="imagenet (torchvision IMAGENET1K_V1 via the torch hub cache), none (random init) or PATH to a ResNet state dict.")]

# training options, shared by finetune and search
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per step (per GPU under torchrun).")]
Lr = Annotated[float, typer.Option("--lr", help="The encoder's learning rate; the decoder's is --decoder-lr-mult times it.")]
DecoderLrMult = Annotated[float, typer.Option("--decoder-lr-mult", help="Decoder (and head) learning rate multiplier.")]
Optimizer = Annotated[str, typer.Option("--optimizer", help="sgd (momentum 0.9) or adamw.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay (never on BN or biases).")]
Schedule = Annotated[str, typer.Option("--schedule", help="cosine or step (x0.1 every third of the run).")]
Warmup = Annotated[float, typer.Option("--warmup-epochs", help="Linear warm-up, in epochs.")]
Loss = Annotated[str, typer.Option("--loss", help="berhu (Laina et al.), l1 or silog.")]
NoAugment = Annotated[bool, typer.Option("--no-augment", help="Train without augmentation.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for initialisation, batch order and augmentation.")]
ValFraction = Annotated[float, typer.Option("--val-fraction", help="Fraction of train frames held out for validation.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU).")]
CompileMode = Annotated[str, typer.Option("--compile-mode", help="torch.compile mode: default, reduce-overhead (CUDA graphs) or max-autotune.")]
Amp = Annotated[str, typer.Option("--amp", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.")]


def train_config(epochs, batch_size, lr, decoder_lr_mult, optimizer, weight_decay, schedule, warmup_epochs, loss,
                 no_augment, seed, compile_, compile_mode, amp):
    from edgeticket.train.trainer import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, decoder_lr_mult=decoder_lr_mult, optimizer=optimizer,
                       weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, loss=loss,
                       augment=not no_augment, seed=seed, compile=compile_, compile_mode=compile_mode, amp=amp)


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    from edgeticket.data.geometry import parse_size

    return None if text is None else parse_size(text)


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
