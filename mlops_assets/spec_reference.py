"""Render docs/configuration.md from PipelineSpec's JSON schema (one source of truth).

    python -m mlops_assets.spec_reference > docs/configuration.md
A test fails when the committed file is stale.
"""

from __future__ import annotations

import json
import sys
import typing

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from mlops_assets.spec import PipelineSpec


def _type(prop, defs: dict) -> str:
    if not isinstance(prop, dict):
        return "any"
    if "$ref" in prop:
        return f"[{prop['$ref'].split('/')[-1]}](#{prop['$ref'].split('/')[-1].lower()})"
    if "anyOf" in prop:
        return " or ".join(_type(p, defs) for p in prop["anyOf"])
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'], defs)}"
    return kind


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from the root's fields, by the name its schema section has."""
    found: dict[str, type[BaseModel]] = {}
    stack = [root]
    while stack:
        model = stack.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            stack += [t for t in _types_in(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
    return found


def _types_in(annotation) -> list:
    return [annotation, *(t for arg in typing.get_args(annotation) for t in _types_in(arg))]


def _default(info: FieldInfo | None) -> str:
    # From the field itself, not the JSON schema: a default_factory ([] or {}) has no "default"
    # key there, yet the field is optional.
    if info is None or info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see section"
    return f"`{json.dumps(to_jsonable_python(value))}`"


def _constraints(prop: dict) -> str:
    parts = []
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                      ("exclusiveMaximum", "<"), ("minLength", "min length"), ("minItems", "min items")):
        if key in prop:
            parts.append(f"{word} {prop[key]}")
    return ", ".join(parts)


def _table(title: str, schema: dict, defs: dict, model: type[BaseModel] | None) -> list[str]:
    lines = [f"## {title}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    lines += ["| field | type | default | rules | description |", "|---|---|---|---|---|"]
    fields = model.model_fields if model is not None else {}
    for name, prop in schema.get("properties", {}).items():
        desc = " ".join((prop.get("description") or "").split())
        lines.append(f"| `{name}` | {_type(prop, defs)} | {_default(fields.get(name))} | {_constraints(prop)} "
                     f"| {desc} |")
    return lines + [""]


def render() -> str:
    schema = PipelineSpec.model_json_schema()
    defs = schema.get("$defs", {})
    out = [
        "# Configuration reference",
        "",
        "Generated from `PipelineSpec`'s JSON schema by `python -m mlops_assets.spec_reference`;",
        "do not edit by hand (a test fails when this file is stale). The same fields are the YAML",
        "spec, the Python API and the `MLOpsPipelineComponent` attributes. Unknown fields are errors.",
        "",
    ]
    models = _models(PipelineSpec)
    out += _table("PipelineSpec", schema, defs, PipelineSpec)
    for name in sorted(defs):
        out += _table(name, defs[name], defs, models.get(name))
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
