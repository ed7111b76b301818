"""edgeticket: lottery tickets for monocular depth, as a Python API and the ``edgeticket`` command.

    import edgeticket as et

    summary = et.search("data/rooms", "runs/search", et.SearchConfig(criterion="channel", levels=3))
    report = et.export(summary["rows"][-1]["path"], "runs/export/ticket")

The names below load on first use, so ``import edgeticket`` stays light.
"""

__version__ = "0.1.0"

_API = {
    # the stages
    "finetune": "edgeticket.train.finetune",
    "search": "edgeticket.tickets.imp",
    "export": "edgeticket.export",  # callable packages (see _callable.py)
    "bench": "edgeticket.bench",
    "run_branches": "edgeticket.tickets.branches",
    "import_ticket": "edgeticket.tickets.formats",
    "ticket_start": "edgeticket.tickets.start",
    "prepare": "edgeticket.data.prepare",
    "write_synthetic": "edgeticket.data.synth",
    "run_pipeline": "edgeticket.pipeline",
    # their settings and typed values
    "TrainConfig": "edgeticket.train.config",
    "FinetuneConfig": "edgeticket.train.config",
    "ModelConfig": "edgeticket.models.config",
    "DataConfig": "edgeticket.data.config",
    "SynthConfig": "edgeticket.data.config",
    "SearchConfig": "edgeticket.tickets.config",
    "BranchConfig": "edgeticket.tickets.config",
    "ExportConfig": "edgeticket.export.config",
    "BenchConfig": "edgeticket.bench.config",
    "InputSize": "edgeticket.hparams",
    "RewindPoint": "edgeticket.tickets.rewind",
    "ModelCard": "edgeticket.models.card",
    "Mask": "edgeticket.tickets.mask",
    "UserError": "edgeticket.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module = importlib.import_module(_API[name])
        return module if module.__name__ == f"edgeticket.{name}" else getattr(module, name)
    raise AttributeError(f"module 'edgeticket' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
