"""Settings as dataclasses: each field is the one home of its default, help text and check.

open_lth's ``foundations/hparams.py`` is the model. A stage's settings are one ``Hparams``
dataclass (``TrainConfig``, ``SearchConfig``, ...). The CLI's options are generated from its
fields (``edgeticket.cli.options``), the pipeline's TOML sections are read with ``from_dict``,
and the Python API takes the dataclass itself, so the three can never disagree on a default.

A field is declared with ``hfield``: its default, help text and what makes a value valid
(``choices``, ``low``/``high`` bounds, a ``check`` callable). Floats must be finite. Values are
typed: ``InputSize``, not ``"228x304"``; text is parsed once, at the edge (``from_dict`` and the
CLI), by the field's ``parse``. Construction validates, so a config that exists is valid.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from edgeticket.errors import UserError


class FieldError(UserError):
    """A bad value for one field; the message names the option or the TOML key it came from."""

    def __init__(self, name: str, value: Any, reason: str, flag: str | None = None):
        self.name, self.value, self.reason = name, value, reason
        super().__init__(f"--{flag or flag_of(name)} {format_value(value)}: {reason}.")

    def located(self, where: str) -> UserError:
        return UserError(f"{where}: {self.name} = {format_value(self.value)}: {self.reason}.")


def flag_of(name: str) -> str:
    return name.replace("_", "-")


def format_value(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# -- typed values ------------------------------------------------------------------------------

class InputSize(NamedTuple):
    """A model input's height and width in pixels; ``str()`` is ``HEIGHTxWIDTH``."""

    height: int
    width: int

    MIN = 16  # pixels; a class attribute, not a field

    @classmethod
    def parse(cls, text: str | tuple | list | InputSize) -> InputSize:
        """'228x304', (228, 304) or [228, 304] -> InputSize(228, 304)."""
        if isinstance(text, tuple | list):
            if len(text) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in text):
                raise ValueError("give two whole numbers, height and width")
            h, w = text
        else:
            m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
            if not m:
                raise ValueError("write HEIGHTxWIDTH, e.g. 228x304")
            h, w = int(m.group(1)), int(m.group(2))
        size = cls(int(h), int(w))
        size.validate()
        return size

    def validate(self) -> None:
        if self.height < self.MIN or self.width < self.MIN:
            raise ValueError(f"height and width must each be at least {self.MIN} pixels")
        if self.height > 8192 or self.width > 8192:
            raise ValueError("height and width must each be at most 8192 pixels")

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


# -- fields --------------------------------------------------------------------------------------

def hfield(default: Any = dataclasses.MISSING, *, help: str, choices: tuple | Callable[[], tuple] | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           check: Callable[[Any], str | None] | None = None, parse: Callable[[Any], Any] | None = None,
           flag: str | None = None, default_factory: Callable[[], Any] | None = None, cli: bool = True,
           panel: str | None = None, nested: bool = False) -> Any:
    """A settings field: default, help and validity in one place.

    ``choices`` is a tuple or a function returning one (a registry's names). ``low``/``high``
    bound numbers (``*_open`` makes a bound exclusive). ``check(value)`` returns a reason when
    the value is bad. ``parse(text)`` turns text (CLI, TOML) or JSON into the typed value and
    raises ValueError with a reason. ``flag`` overrides the option name; ``cli=False`` keeps a
    field off the command line; ``nested`` marks a field holding another ``Hparams``.
    """
    metadata = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
                "high_open": high_open, "check": check, "parse": parse, "flag": flag, "cli": cli,
                "panel": panel, "nested": nested}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    return c() if callable(c) else c


def field_type(owner: type, f: dataclasses.Field) -> Any:
    """The field's annotation as a type (this module's dataclasses use postponed annotations)."""
    return typing.get_type_hints(owner)[f.name]


def base_type(tp: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), True
    return tp, False


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate_value(owner: type, f: dataclasses.Field, value: Any) -> str | None:
    """The reason ``value`` is not valid for ``f``, or None."""
    tp, nullable = base_type(field_type(owner, f))
    if value is None:
        return None if nullable else "a value is required"
    md = f.metadata
    if tp is bool and not isinstance(value, bool):
        return "give true or false"
    if tp is int and (not isinstance(value, int) or isinstance(value, bool)):
        return "give a whole number"
    if tp is float:
        if not _is_number(value):
            return "give a number"
        if not math.isfinite(value):
            return "give a finite number"
    if tp is str and not isinstance(value, str):
        return "give a text value"
    if _is_number(value):
        lo, hi = md.get("low"), md.get("high")
        if lo is not None and (value <= lo if md.get("low_open") else value < lo):
            return f"must be {'>' if md.get('low_open') else '>='} {lo:g}"
        if hi is not None and (value >= hi if md.get("high_open") else value > hi):
            return f"must be {'<' if md.get('high_open') else '<='} {hi:g}"
    choices = choices_of(f)
    if choices is not None and value not in choices:
        return "choose " + _or_list(choices)
    if md.get("check") is not None:
        return md["check"](value)
    return None


def _or_list(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def parse_value(owner: type, f: dataclasses.Field, raw: Any) -> Any:
    """Text or JSON (from the CLI, a TOML file or a sidecar) -> the field's typed value."""
    parse = f.metadata.get("parse")
    if raw is None or parse is None:
        tp, _ = base_type(field_type(owner, f))
        if tp is float and _is_number(raw):
            return float(raw)
        if tp is Path and isinstance(raw, str):
            return Path(raw)
        return raw
    try:
        return parse(raw)
    except (ValueError, TypeError) as e:
        raise FieldError(f.name, raw, str(e) or "not a valid value", f.metadata.get("flag")) from None


# -- the base class ----------------------------------------------------------------------------

class Hparams:
    """Mixin for a ``@dataclass`` of settings: validated on construction, read from dicts."""

    section: ClassVar[str] = ""  # the name used in messages and as the TOML section

    def __post_init__(self) -> None:
        self._coerce()
        self.check()

    def _coerce(self) -> None:
        """Plain Python values where typed ones are due: a path as str, an int for a float, a
        tuple for an InputSize. Text for a parsed type is refused: it is parsed at the edge."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            tp, _ = base_type(field_type(type(self), f))
            if value is None or f.metadata.get("nested") or not isinstance(tp, type) or isinstance(value, tp):
                continue
            if tp is Path and isinstance(value, str):
                setattr(self, f.name, Path(value))
            elif tp is float and _is_number(value):
                setattr(self, f.name, float(value))
            elif isinstance(value, str) and f.metadata.get("parse") is not None:
                raise TypeError(f"{type(self).__name__}.{f.name}: pass a {tp.__name__}, not the text {value!r} "
                                f"(text is parsed at the CLI and config edge, e.g. by {tp.__name__}.parse)")
            elif f.metadata.get("parse") is not None and not isinstance(value, bool):
                setattr(self, f.name, parse_value(type(self), f, value))

    @classmethod
    def settings(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def check(self) -> None:
        """Every field valid, then the checks that need several fields (``check_fields``)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("nested"):
                continue  # a nested Hparams validated itself when it was made
            reason = validate_value(type(self), f, value)
            if reason:
                raise FieldError(f.name, value, reason, f.metadata.get("flag"))
        self.check_fields()

    def check_fields(self) -> None:
        """Cross-field rules; raise ``FieldError`` naming the field to change."""

    # -- dicts ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "", base: Mapping[str, Any] | None = None,
                  flatten: tuple[str, ...] | None = None):
        """Build from a TOML section or a JSON sidecar; an unknown key is an error naming it.

        ``base`` supplies values the section does not set (a pipeline's ``[train]`` under its
        ``[dense]``). Keys of nested settings may sit in the section itself (``epochs`` in
        ``[search]``), for the nested fields named in ``flatten`` (default: all), or under the
        nested field's name as a dict (a JSON sidecar).
        """
        where = where or f"[{cls.section}]"
        if not isinstance(d, Mapping):
            raise UserError(f"{where}: must be a table of settings, not {type(d).__name__}.")
        merged = _deep_merge(dict(base or {}), d)
        return cls._build(merged, where, flatten)

    @classmethod
    def _build(cls, d: dict, where: str, flatten: tuple[str, ...] | None):
        own = {f.name: f for f in dataclasses.fields(cls)}
        nested = {n: f for n, f in own.items() if f.metadata.get("nested")}
        kwargs: dict[str, Any] = {}
        sub: dict[str, dict] = {n: {} for n in nested}
        for key, raw in d.items():  # nested tables first, so that flat keys override them
            if key in nested and isinstance(raw, Mapping):
                sub[key] = _deep_merge(sub[key], raw)
        for key, raw in d.items():
            if key in nested and isinstance(raw, Mapping):
                continue
            if key in own and key not in nested:
                try:
                    kwargs[key] = parse_value(cls, own[key], raw)
                except FieldError as e:
                    raise e.located(where) from None
                continue
            home = [n for n in nested if (flatten is None or n in flatten)
                    and key in nested_class(cls, nested[n]).all_names()]
            if not home:
                raise UserError(f"{where}: unknown key {key!r}; the keys are {', '.join(cls.allowed_keys(flatten))}.")
            sub[home[0]][key] = raw
        for n, f in nested.items():
            kwargs[n] = nested_class(cls, f)._build(sub[n], where, None)
        try:
            return cls(**kwargs)
        except FieldError as e:
            raise e.located(where) from None

    @classmethod
    def all_names(cls) -> set[str]:
        out = set()
        for f in dataclasses.fields(cls):
            if f.metadata.get("nested"):
                out |= nested_class(cls, f).all_names()
            else:
                out.add(f.name)
        return out

    @classmethod
    def allowed_keys(cls, flatten: tuple[str, ...] | None = None) -> list[str]:
        keys = []
        for f in dataclasses.fields(cls):
            if not f.metadata.get("nested"):
                keys.append(f.name)
            elif flatten is None or f.name in flatten:
                keys += sorted(nested_class(cls, f).all_names())
        return keys

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: nested settings as dicts, typed values as text or lists."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Hparams) else to_json_value(v)
        return out

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def nested_class(owner: type, f: dataclasses.Field) -> type[Hparams]:
    tp, _ = base_type(field_type(owner, f))
    return tp


def to_json_value(v: Any) -> Any:
    if isinstance(v, InputSize):
        return [v.height, v.width]
    if hasattr(v, "to_json"):
        return v.to_json()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def _deep_merge(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def parse_input_size(raw: Any) -> InputSize | None:
    return None if raw is None else InputSize.parse(raw)


def parse_path(raw: Any) -> Path | None:
    if raw is None:
        return None
    if not isinstance(raw, str | Path):
        raise ValueError("give a path")
    return Path(raw)
