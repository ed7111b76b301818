"""Which frames and at what size: the data stage's settings."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.hparams import Hparams, InputSize, hfield, parse_input_size

_PANEL = "Data"
DEFAULT_VIEWS = 3  # synthetic views per room; NYU's labeled set has about 3 frames a scene (1,449 of 464)
VAL_CARVES = ("auto", "scene", "frame")


@dataclass
class DataConfig(Hparams):
    """How a dataset folder becomes a training cache: input size and the validation carve."""

    section = "data"

    input_size: InputSize | None = hfield(
        None, help="HEIGHTxWIDTH of the model input, e.g. 228x304 (default: the data's: a prepared cache's size, "
        "or 228x304 for a dataset folder).", parse=parse_input_size, panel=_PANEL)
    val_fraction: float = hfield(0.1, help="Fraction of the train frames held out for validation.", low=0, high=1,
                                 high_open=True, panel=_PANEL)
    split_seed: int = hfield(0, help="Seed of the validation carve; apart from --seed, so that runs of several "
                             "seeds are validated on the same frames.", low=0, high=2**31 - 1, panel=_PANEL)
    val_carve: str = hfield("auto", help="How validation is carved from the train frames: scene (whole scenes, "
                            "so no scene is in both; needs scene names, as the labeled .mat and the synthetic "
                            "rooms have), frame (frame by frame), or auto (scene where the data names scenes, "
                            "else frame).", choices=VAL_CARVES, panel=_PANEL)


def _synth_presets() -> tuple[str, ...]:
    from edgeticket.data.synth import PRESETS

    return tuple(PRESETS)


@dataclass
class SynthConfig(Hparams):
    """The synthetic rooms: how many frames, how many views of each room, from which seed."""

    section = "synth"

    n: int | None = hfield(None, help="Number of frames (default: the preset's).", low=8, high=65_535)
    preset: str = hfield("nyu", help="small (64 frames) or nyu (1,449 frames, as many as NYU's labeled set).",
                         choices=_synth_presets)
    seed: int = hfield(0, help="Seed; the same seed gives the same frames.", low=0, high=2**31 - 1)
    views: int = hfield(DEFAULT_VIEWS, help="Camera poses per room: consecutive frames show one room and share its "
                        "scene name, as NYU's frames of one scene come from one sequence (1: a room per frame).",
                        low=1, high=64)
    workers: int | None = hfield(None, help="Render processes (default: all cores).", low=1, high=1024)

    @property
    def frames(self) -> int:
        from edgeticket.data.synth import PRESETS

        return self.n if self.n is not None else PRESETS[self.preset]
