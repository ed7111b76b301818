"""How to train: the one home of every training setting, shared by finetune, search and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.data.config import DataConfig
from edgeticket.hparams import Hparams, hfield
from edgeticket.models.config import ModelConfig

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N."
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _loss_names() -> tuple[str, ...]:
    from edgeticket.train.losses import LOSSES

    return tuple(LOSSES)


_PANEL = "Training"


@dataclass
class TrainConfig(Hparams):
    """One training run: the optimiser, the schedule, the loss, and how fast to run it."""

    section = "train"

    epochs: int = hfield(20, help="Training epochs.", low=1, high=100_000, panel=_PANEL)
    batch_size: int = hfield(16, help="Images per step (per GPU under torchrun).", low=1, high=65_536, panel=_PANEL)
    optimizer: str = hfield("sgd", help="sgd (with --momentum) or adamw.", choices=("sgd", "adamw"), panel=_PANEL)
    lr: float = hfield(0.01, help="The encoder's learning rate; the decoder's is --decoder-lr-mult times it.",
                       low=0, low_open=True, high=10, panel=_PANEL)
    decoder_lr_mult: float = hfield(10.0, help="Decoder (and head) learning rate multiplier.", low=0, low_open=True,
                                    high=1000, panel=_PANEL)
    momentum: float = hfield(0.9, help="SGD momentum.", low=0, high=1, high_open=True, panel=_PANEL)
    weight_decay: float = hfield(1e-4, help="Weight decay (never on BN or biases).", low=0, high=1, panel=_PANEL)
    schedule: str = hfield("cosine", help="cosine, or step (x0.1 every --step-every epochs).",
                           choices=("cosine", "step"), panel=_PANEL)
    warmup_epochs: float = hfield(1.0, help="Linear warm-up, in epochs.", low=0, high=100_000, panel=_PANEL)
    step_every: int = hfield(0, help="The step schedule's period in epochs (0: a third of the run).", low=0,
                             panel=_PANEL)
    loss: str = hfield("berhu", help="berhu (Laina et al.), l1 or silog.", choices=_loss_names, panel=_PANEL)
    augment: bool = hfield(True, help="Scale, rotation, flip and colour jitter on the training device.", panel=_PANEL)
    seed: int = hfield(0, help="Seed for initialisation, batch order and augmentation.", low=0, high=2**31 - 1,
                       panel=_PANEL)
    eval_batch_size: int = hfield(16, help="Images per evaluation batch.", low=1, high=65_536, panel=_PANEL)
    compile: bool = hfield(False, help="torch.compile the model (on a GPU; inductor also compiles for the CPU).",
                           panel=_PANEL)
    compile_mode: str = hfield("default", help="torch.compile mode: default, reduce-overhead (CUDA graphs), "
                               "max-autotune or max-autotune-no-cudagraphs.", choices=COMPILE_MODES, panel=_PANEL)
    amp: str = hfield("auto", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.", choices=("auto", "bf16", "fp32"),
                      panel=_PANEL)
    channels_last: str = hfield("auto", help="channels_last memory format: auto (on CUDA), on or off.",
                                choices=("auto", "on", "off"), panel=_PANEL)
    guard_every: int = hfield(50, help="The divergence guard reads the loss every this many steps.", low=1,
                              panel=_PANEL)
    distill: str = hfield("", help="Distil from this trained model directory (a dense finetune output or a search "
                          "level): the loss adds --distill-weight x L1 between the model's and the teacher's depth on "
                          "the valid pixels. Empty: no teacher.", panel=_PANEL)
    distill_weight: float = hfield(1.0, help="The weight of the distillation term (with --distill).", low=0,
                                   low_open=True, high=1000, panel=_PANEL)
    guard_factor: float = hfield(100.0, help="The guard stops a loss this many times the previous epoch's median.",
                                 low=1, low_open=True, panel=_PANEL)


@dataclass
class FinetuneConfig(Hparams):
    """A fine-tune: the model, the data and the training."""

    section = "finetune"

    model: ModelConfig = hfield(default_factory=ModelConfig, help="The model.", nested=True)
    data: DataConfig = hfield(default_factory=DataConfig, help="The data.", nested=True)
    train: TrainConfig = hfield(default_factory=TrainConfig, help="The training.", nested=True)


# What may differ between a run and its resume: the learning rate (lowered after divergence)
# and settings that change speed or bookkeeping, never the batches or the schedule.
RESUMABLE_CHANGES = frozenset({"lr", "eval_batch_size", "compile", "compile_mode", "guard_every", "guard_factor"})
