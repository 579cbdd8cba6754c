"""The configuration and CLI references, generated from the pydantic schema and the argparse parser.

The documentation site inserts them at build time (``docs/hooks.py``), so a key or a flag
added to the code is documented with no edit to the docs; the tests check that every key
has a description and every flag a help text.
"""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class Key:
    """One configuration key: its dotted name, type, default, bounds and description."""

    name: str
    type: str
    default: str
    bounds: str
    description: str
    choices: str = ""  # the registry's names, where the key names an entry of one


def _registries() -> dict[str, Callable[[], Mapping[str, Any]]]:
    """Keys whose value names a registry entry, and the registry (read when the reference is made: plugins too)."""
    from pdsearch.catalog.objectives import OBJECTIVES
    from pdsearch.catalog.precisions import PRECISIONS, RECIPES
    from pdsearch.catalog.runtimes import RUNTIMES
    from pdsearch.catalog.samplers import SAMPLERS
    from pdsearch.catalog.schedulers import SCHEDULERS
    from pdsearch.catalog.trackers import TRACKERS
    from pdsearch.data import DATASETS
    from pdsearch.policy.allocators import ALLOCATORS, modes
    from pdsearch.policy.criteria import CRITERIA

    return {
        "data.dataset": lambda: DATASETS, "space.mode": lambda: dict.fromkeys(modes()),
        "space.criteria": lambda: CRITERIA, "space.criteria_pool": lambda: CRITERIA,
        "space.allocators": lambda: ALLOCATORS, "space.precision": lambda: PRECISIONS,
        "search.sampler": lambda: SAMPLERS, "search.scheduler": lambda: SCHEDULERS,
        "search.objectives": lambda: OBJECTIVES, "search.trackers": lambda: TRACKERS,
        "latency.runtime": lambda: RUNTIMES, "quantization.recipe": lambda: RECIPES,
    }


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        shown = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(shown) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and annotation.__name__ == "Range":
        return "range"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
        return "" if not value or isinstance(value, dict) and len(value) > 2 else json.dumps(value)
    return json.dumps(value)


_SIGNS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _bounds(field: FieldInfo) -> str:
    found = [f"{sign} {getattr(m, name):g}" for m in field.metadata for name, sign in _SIGNS.items()
             if getattr(m, name, None) is not None]
    return ", ".join(found)


def _section(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate.__name__ != "Range":
            return candidate
    return None


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[Key]:
    """Every key of the schema, sections first, depth first; constraints and allocator settings from their tables."""
    from pdsearch.catalog.objectives import CONSTRAINTS
    from pdsearch.config import SearchConfig
    from pdsearch.policy.allocators import ALLOCATORS

    model = model or SearchConfig
    registries = _registries()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        choices = ", ".join(registries[key]()) if key in registries else ""
        yield Key(key, _type_name(field.annotation), _default(field), _bounds(field), field.description or "",
                  choices)
        section = _section(field.annotation)
        if key == "search.constraints":
            for c in CONSTRAINTS.values():
                what = "at most" if c.sense == "<=" else "at least"
                yield Key(f"{key}.{c.field}", "number or null", "null", "≥ 0" + (", < 100" if c.percent else ""),
                          f"The {c.label} of a feasible policy is {what} this ({c.unit.strip() or 'value'}).")
        elif key == "space.allocators":
            for allocator in ALLOCATORS.values():
                if allocator.settings.model_fields:
                    yield from config_keys(allocator.settings, f"{key}.{allocator.name}.")
        elif section is not None:
            yield from config_keys(section, key + ".")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """Markdown: one table per top-level section, every key with type, default, bounds and description."""
    from pdsearch.config import SearchConfig

    keys = list(config_keys())
    top = [k for k in keys if "." not in k.name]
    parts = ["Every key a search config takes, generated from the schema (`pdsearch/config.py`). A **range** is "
             "`{low, high}` (sampled), `{low, high, step}` (a grid) or `{values: [...]}`.", "",
             "| key | type | default | description |", "|---|---|---|---|"]
    parts += [f"| `{k.name}` | {k.type} | `{_cell(k.default)}` | {_cell(k.description)} |"
              for k in top if _section(SearchConfig.model_fields[k.name].annotation) is None]
    for section in (k for k in top if _section(SearchConfig.model_fields[k.name].annotation) is not None):
        parts += ["", f"## `{section.name}`", "", section.description, "",
                  "| key | type | default | bounds | description |", "|---|---|---|---|---|"]
        for k in keys:
            if k.name.startswith(section.name + "."):
                text = k.description + (f" One of: {k.choices}." if k.choices else "")
                default = f"`{_cell(k.default)}`" if k.default else ""
                parts.append(f"| `{k.name}` | {_cell(k.type)} | {default} | {k.bounds} | {_cell(text)} |")
    return "\n".join(parts) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def cli_reference() -> str:
    """Markdown: every subcommand with its usage and each argument's help and default."""
    from pdsearch.cli import build_parser

    parser = build_parser()
    helps = {a.dest: a.help for a in next(a for a in parser._actions
                                          if isinstance(a, argparse._SubParsersAction))._choices_actions}
    parts = ["Every command and flag, generated from the command line's own parser (`pdsearch/cli.py`). "
             "`pdsearch COMMAND --help` prints the same."]
    for name, sub in _subcommands(parser).items():
        parts += ["", f"## `pdsearch {name}`", "", helps.get(name) or "", "", "```text",
                  sub.format_usage().strip().removeprefix("usage: "), "```", "",
                  "| argument | help | default |", "|---|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = ", ".join(action.option_strings) or action.dest
            default = "" if action.default in (None, False, argparse.SUPPRESS) or action.required \
                else f"`{action.default}`"
            choices = f" One of: {', '.join(map(str, action.choices))}." if action.choices else ""
            parts.append(f"| `{flag}` | {_cell((action.help or '') + choices)} | {default} |")
    return "\n".join(parts) + "\n"


def cli_flags() -> dict[str, set[str]]:
    """Each subcommand's option strings (what the docs' example commands may use)."""
    from pdsearch.cli import build_parser

    return {name: {s for a in sub._actions for s in a.option_strings}
            for name, sub in _subcommands(build_parser()).items()}
