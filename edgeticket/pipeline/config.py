"""The pipeline's TOML file, section by section, onto the stages' own settings dataclasses.

Every section maps onto the dataclass that owns its settings, with ``from_dict``: the
pipeline has no defaults of its own, an unknown key is an error naming it and its section,
and every value is checked before the first stage runs.

    [run]      out, device                          -> RunSection
    [data]     source, synth_frames/_seed/_views    -> DataSection (+ DataConfig's keys)
    [model]    arch, pretrained                     -> ModelConfig
    [train]    the defaults of every training below -> TrainConfig
    [dense]    the dense fine-tune (over [train])   -> TrainConfig
    [search]   the channel search (+ [train] keys)  -> SearchConfig
    [search_unstructured]  optional second search   -> SearchConfig
    [branches] random_seeds, levels                 -> BranchesSection
    [ticket]   the chosen ticket's fine-tune        -> TrainConfig (over [dense]: the same
               epochs and schedule as the dense model, from the search's rewind point);
               distill = true distils it from the dense model
    [efficient] an efficient model from the start    -> ModelConfig (trained with [dense]'s
               settings, exported and benched beside the tickets: FastDepth's row)
    [export]                                        -> ExportConfig
    [bench]                                         -> BenchConfig
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgeticket.bench.config import BenchConfig
from edgeticket.data.config import DEFAULT_VIEWS, DataConfig
from edgeticket.errors import UserError
from edgeticket.export.config import ExportConfig
from edgeticket.hparams import Hparams, hfield, parse_path
from edgeticket.models.config import ModelConfig
from edgeticket.tickets.config import SearchConfig
from edgeticket.train.config import DEFAULT_DEVICE, DEVICE_HELP, TrainConfig

REQUIRED = ("run", "data", "model", "dense", "search", "export", "bench")
OPTIONAL = ("train", "search_unstructured", "branches", "ticket", "efficient")


@dataclass
class RunSection(Hparams):
    section = "run"

    out: Path = hfield(Path("runs/pipeline"), help="The run folder (the CLI's --out overrides it).", parse=parse_path)
    device: str = hfield(DEFAULT_DEVICE, help=DEVICE_HELP, check=lambda v: None if v.strip() else "give a device")


@dataclass
class DataSection(Hparams):
    section = "data"

    source: str = hfield("synth", help="synth (rendered rooms, written into the run folder) or a dataset folder.",
                         check=lambda v: None if v.strip() else "give synth or a dataset folder")
    synth_frames: int = hfield(96, help="Rooms to render when source = synth.", low=8, high=65_535)
    synth_seed: int = hfield(0, help="The rooms' seed.", low=0, high=2**31 - 1)
    synth_views: int = hfield(DEFAULT_VIEWS, help="Views of each room when source = synth (a room is a scene).",
                              low=1, high=64)
    prepare: DataConfig = hfield(default_factory=DataConfig, help="Input size and validation carve.", nested=True)


def _check_levels(v) -> str | None:
    if v == "all" or (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
        return None
    return 'give "all" or a list of level numbers >= 1'


@dataclass
class BranchesSection(Hparams):
    section = "branches"

    random_seeds: int = hfield(0, help="Random-pruning baselines of the channel search, seeds per level (0: none).",
                               low=0, high=1000)
    levels: str | list = hfield("all", help='The levels that get baselines: "all" or a list.', check=_check_levels)


@dataclass
class PipelineConfig:
    path: Path
    run: RunSection
    data: DataSection
    model: ModelConfig
    dense: TrainConfig
    search: SearchConfig
    search_unstructured: SearchConfig | None
    branches: BranchesSection
    ticket: TrainConfig
    export: ExportConfig
    bench: BenchConfig
    raw: dict = field(default_factory=dict)  # the file as read, to tell a rerun with another config
    ticket_distill: bool = False  # [ticket] distill = true: the ticket learns from the dense model too
    efficient: ModelConfig | None = None  # [efficient]: e.g. a dense fastdepth_mobilenet_v2 row in the bench


def load_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline TOML; every error names the file, the section and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file; see `edgeticket pipeline --help` or the presets.")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({e}).") from None
    for section in REQUIRED:
        if section not in raw:
            raise UserError(f"{path}: has no [{section}] section; start from a shipped preset (edgeticket/presets/).")
    unknown = [s for s in raw if s not in REQUIRED + OPTIONAL]
    if unknown:
        raise UserError(f"{path}: unknown section [{unknown[0]}]; the sections are {', '.join(REQUIRED + OPTIONAL)}.")

    def where(section: str) -> str:
        return f"{path} [{section}]"

    def table(section: str) -> dict:
        t = raw.get(section, {})
        if not isinstance(t, dict):
            raise UserError(f"{where(section)}: must be a table of settings.")
        return t

    run = RunSection.from_dict(table("run"), where("run"))
    data = DataSection.from_dict(table("data"), where("data"))
    model = ModelConfig.from_dict(table("model"), where("model"))
    base_train = TrainConfig.from_dict(table("train"), where("train")).to_dict()
    shared = {"model": model.to_dict(), "data": data.prepare.to_dict(), "train": base_train}

    def search(section: str) -> SearchConfig:
        return SearchConfig.from_dict(table(section), where(section), base=shared, flatten=("train",))

    dense = TrainConfig.from_dict(table("dense"), where("dense"), base=base_train)
    channel_search = search("search")
    # a fair comparison: the ticket trains as the dense model did, unless [ticket] says otherwise
    ticket_table = dict(table("ticket"))
    ticket_distill = ticket_table.pop("distill", False)  # true: from the dense model this pipeline trains
    if not isinstance(ticket_distill, bool):
        raise UserError(f"{where('ticket')}: distill = {ticket_distill!r}: give true (distil the ticket from the "
                        "pipeline's dense model) or false.")
    ticket = TrainConfig.from_dict(ticket_table, where("ticket"), base=dense.to_dict())
    _check_ticket_start(ticket, channel_search, where("ticket"))
    return PipelineConfig(
        path=path, run=run, data=data, model=model,
        dense=dense,
        search=channel_search,
        search_unstructured=search("search_unstructured") if raw.get("search_unstructured") else None,
        branches=BranchesSection.from_dict(table("branches"), where("branches")),
        ticket=ticket,
        export=ExportConfig.from_dict(table("export"), where("export")),
        bench=BenchConfig.from_dict(table("bench"), where("bench")),
        raw=raw,
        ticket_distill=ticket_distill,
        efficient=ModelConfig.from_dict(table("efficient"), where("efficient")) if "efficient" in raw else None,
    )


def _check_ticket_start(ticket: TrainConfig, search: SearchConfig, where: str) -> None:
    """The ticket starts at its search's rewind point, which must lie inside the ticket's training."""
    rewind = search.rewind
    if rewind.kind == "epoch" and rewind.k >= ticket.epochs:
        raise UserError(f"{where}: epochs = {ticket.epochs}: the ticket starts at its search's rewind point "
                        f"{rewind}, so it needs more than {rewind.k} epochs.")


def ticket_differences(cfg: PipelineConfig) -> list[str]:
    """The training settings in which the ticket's fine-tune differs from the dense model's."""
    dense, ticket = cfg.dense.to_dict(), cfg.ticket.to_dict()
    return [k for k in dense if dense[k] != ticket[k]]
