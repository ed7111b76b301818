"""Typer options generated from the settings dataclasses (open_lth's ``Hparams.add_args``).

``@config_options(train=TrainConfig, ...)`` adds one option per field of each dataclass
(nested settings flattened: ``SearchConfig`` brings the model's, the data's and the training
options) to a command, and calls the command with the built dataclasses instead of the loose
values. The option's name, default and help come from the field, so the CLI cannot disagree
with the Python API or the pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeticket.hparams import (
    Hparams,
    base_type,
    field_type,
    flag_of,
    nested_class,
    parse_value,
)

_SEP = "__"


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One generated option: where its value goes and how it is shown."""

    param: str  # the Python parameter name (config key and field path joined by _SEP)
    path: tuple[str, ...]  # (config key, nested field..., field)
    owner: type[Hparams]
    field: dataclasses.Field

    @property
    def flag(self) -> str:
        return "--" + (self.field.metadata.get("flag") or flag_of(self.field.name))


def option_specs(key: str, cls: type[Hparams], only: tuple[str, ...] | None = None,
                 exclude: tuple[str, ...] = ()) -> list[OptionSpec]:
    """Every CLI field of ``cls``, nested settings flattened."""
    out = []

    def walk(owner: type[Hparams], path: tuple[str, ...]):
        for f in dataclasses.fields(owner):
            if f.metadata.get("nested"):
                walk(nested_class(owner, f), (*path, f.name))
            elif f.metadata.get("cli", True) and (only is None or f.name in only) and f.name not in exclude:
                full = (*path, f.name)
                out.append(OptionSpec(_SEP.join(full), full, owner, f))

    walk(cls, (key,))
    return out


def cli_default(spec: OptionSpec) -> Any:
    """The field's default as the option shows and takes it."""
    f = spec.field
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ...
    if value is None or isinstance(value, bool | int | float | str | Path):
        return value
    return str(value)  # typed values show (and are given) as text: 228x304, epoch:2, delta1_drop<=0.01


def _annotation(spec: OptionSpec) -> Any:
    tp, nullable = base_type(field_type(spec.owner, spec.field))
    if tp not in (bool, int, float, str, Path):
        tp = str  # typed values (InputSize, RewindPoint, ...) arrive as text and are parsed by the field
    help_text = spec.field.metadata["help"]
    panel = spec.field.metadata.get("panel")
    if tp is bool:
        name = spec.flag.removeprefix("--")
        option = typer.Option(f"--{name}/--no-{name}", help=help_text, rich_help_panel=panel)
    else:
        option = typer.Option(spec.flag, help=help_text, rich_help_panel=panel)
    return Annotated[(tp | None) if nullable or cli_default(spec) is None else tp, option]


def config_options(only: dict[str, tuple[str, ...]] | None = None, exclude: tuple[str, ...] = (),
                   **configs: type[Hparams]) -> Callable:
    """Decorate a Typer command: options for every field of ``configs``, passed as built dataclasses.

    The command takes a keyword argument per config (``train: TrainConfig``); ``only`` limits a
    config to some fields (the others keep their defaults), ``exclude`` drops fields by name.
    """

    def decorate(fn: Callable) -> Callable:
        specs = [s for key, cls in configs.items() for s in option_specs(key, cls, (only or {}).get(key), exclude)]
        flags = [s.flag for s in specs]
        dup = {f for f in flags if flags.count(f) > 1}
        if dup:
            raise RuntimeError(f"{fn.__name__}: options generated twice: {sorted(dup)}")
        sig = inspect.signature(fn, eval_str=True)
        own = [p for name, p in sig.parameters.items() if name not in configs]
        generated = [inspect.Parameter(s.param, inspect.Parameter.KEYWORD_ONLY, default=cli_default(s),
                                       annotation=_annotation(s)) for s in specs]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {s.param: kwargs.pop(s.param) for s in specs if s.param in kwargs}
            built = {key: build_config(cls, key, [s for s in specs if s.path[0] == key], values)
                     for key, cls in configs.items()}
            return fn(*args, **kwargs, **built)

        wrapper.__signature__ = sig.replace(parameters=own + generated)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + generated}
        wrapper.option_specs = specs  # for the test that walks the commands
        return wrapper

    return decorate


def build_config(cls: type[Hparams], key: str, specs: list[OptionSpec], values: dict[str, Any]) -> Hparams:
    """The dataclass from the options' values: text parsed by each field, nested settings built first."""
    tree: dict = {}
    for s in specs:
        raw = values.get(s.param, cli_default(s))
        if raw is ...:
            continue
        node = tree
        for part in s.path[1:-1]:
            node = node.setdefault(part, {})
        node[s.path[-1]] = parse_value(s.owner, s.field, raw)
    return _construct(cls, tree, key)


def _construct(cls: type[Hparams], tree: dict, key: str) -> Hparams:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested"):
            kwargs[f.name] = _construct(nested_class(cls, f), tree.get(f.name, {}), key)
        elif f.name in tree:
            kwargs[f.name] = tree[f.name]
    return cls(**kwargs)
