"""`docs/configuration.md`, generated from the pydantic models so it cannot drift.

    python -m creason.configdoc > docs/configuration.md
"""

from __future__ import annotations

import json
import types
import typing

from pydantic import BaseModel

from creason.config import CreasonConfig

HEADER = """# Configuration

Generated from `creason/config.py` by `python -m creason.configdoc`; do not edit by hand.

Load a YAML file (`--config quickstart` names a shipped one in `creason/configs/`) and override
any field with `--set key.path=value` (values are parsed as YAML: `--set "data.paths=[a.csv]"`).
Unknown keys and wrong types are errors naming the key.
"""


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list):
        value = [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
    return f"`{json.dumps(value)}`"


def _section_type(annotation) -> type[BaseModel] | None:
    """The section model of a field annotated `Section` or `Section | None`, else None."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    for candidate in (annotation, *(args if optional else ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section(model: type[BaseModel], prefix: str) -> list[str]:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        sub = _section_type(field.annotation)
        if sub is not None:
            nested.append((f"{prefix}{name}", sub))
            if field.annotation is sub:  # always present: its keys are the whole story
                continue
        doc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{prefix}{name}` | {_default(field)} | {doc} |")
    title = prefix.rstrip(".") or "top level"
    lines = [f"## `{title}`", "", (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "", "",
             "| key | default | meaning |", "|---|---|---|", *rows, ""] if rows else []
    for path, sub in nested:
        lines += _section(sub, path + ".")
    return lines


def render() -> str:
    return HEADER + "\n" + "\n".join(_section(CreasonConfig, "")) 


if __name__ == "__main__":
    print(render(), end="")
