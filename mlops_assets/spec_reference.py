"""Render docs/configuration.md from PipelineSpec's JSON schema (one source of truth).

    python -m mlops_assets.spec_reference > docs/configuration.md
A test fails when the committed file is stale.
"""

from __future__ import annotations

import json
import sys

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


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "**required**"
    value = prop["default"]
    if isinstance(value, dict) and value:
        return "see section"
    return f"`{json.dumps(value)}`"


def _constraints(prop: dict) -> str:
    parts = []
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                      ("exclusiveMaximum", "<"), ("minLength", "min length"), ("minItems", "min items")):
        if key in prop:
            parts.append(f"{word} {prop[key]}")
    return ", ".join(parts)


def _table(title: str, schema: dict, defs: dict) -> list[str]:
    lines = [f"## {title}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    lines += ["| field | type | default | rules | description |", "|---|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        desc = " ".join((prop.get("description") or "").split())
        lines.append(f"| `{name}` | {_type(prop, defs)} | {_default(prop)} | {_constraints(prop)} | {desc} |")
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
    out += _table("PipelineSpec", schema, defs)
    for name in sorted(defs):
        out += _table(name, defs[name], defs)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
