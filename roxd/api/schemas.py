"""The OpenAPI document (openapi.json, shipped beside this module) and request validation.

The document is the contract: the router is built from its paths and operation ids, query and
path parameters are coerced and checked with its parameter schemas, and request bodies with
its component schemas, by the small JSON Schema subset below (type, nullable, enum,
properties, required, additionalProperties, items, min/max, lengths, pattern, $ref). No
schema lives anywhere else, so the document cannot drift from what the server accepts.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from roxd.errors import ApiError

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")
METHODS = ("get", "post", "put", "delete", "patch")


@cache
def document_bytes() -> bytes:
    return DOCUMENT_PATH.read_bytes()


@cache
def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # "query" | "path"
    required: bool
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # template, e.g. /v1/rules/{id}
    operation_id: str
    access: str  # "read" | "admin"
    params: tuple[Param, ...]
    body_schema: dict[str, Any] | None
    body_required: bool


def operations(doc: dict[str, Any] | None = None) -> list[Operation]:
    doc = doc if doc is not None else document()
    ops = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            params = tuple(Param(p["name"], p["in"], bool(p.get("required")), p["schema"])
                           for p in spec.get("parameters", ()))
            body = spec.get("requestBody")
            body_schema = body["content"]["application/json"]["schema"] if body else None
            ops.append(Operation(method.upper(), path, spec["operationId"],
                                 spec.get("x-roxd-access", "read"), params, body_schema,
                                 bool(body and body.get("required"))))
    return ops


# ---------------------------------------------------------------------------- validation


def resolve(schema: dict[str, Any], doc: dict[str, Any] | None = None) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    doc = doc if doc is not None else document()
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return resolve(node, doc)


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def errors(schema: dict[str, Any], value: Any, where: str = "body") -> list[str]:
    """Every way `value` breaks `schema`, each naming where (body.pid, query.limit, ...)."""
    schema = resolve(schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{where} must not be null"]
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        return [f"{where} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                f"not {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where} must be one of {', '.join(map(str, schema['enum']))}"]
    out: list[str] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{where} must be at least {schema['minLength']} characters")
        if len(value) > schema.get("maxLength", math.inf):
            out.append(f"{where} must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where} does not match {schema['pattern']}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{where} must be a finite number")
        elif value < schema.get("minimum", -math.inf):
            out.append(f"{where} must be >= {schema['minimum']}")
        elif value > schema.get("maximum", math.inf):
            out.append(f"{where} must be <= {schema['maximum']}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where} needs at least {schema['minItems']} items")
        if len(value) > schema.get("maxItems", math.inf):
            out.append(f"{where} takes at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += errors(schema["items"], item, f"{where}[{i}]")
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        if len(value) < schema.get("minProperties", 0):
            out.append(f"{where} needs at least {schema['minProperties']} fields "
                       f"({', '.join(props)})")
        for name in schema.get("required", ()):
            if name not in value:
                out.append(f"{where}.{name} is required")
        for name, item in value.items():
            if name in props:
                out += errors(props[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties", True) is False:
                out.append(f"{where}: unknown field {name!r} (known: {', '.join(props)})")
    return out


def check(schema: dict[str, Any], value: Any, where: str = "body") -> None:
    problems = errors(schema, value, where)
    if problems:
        raise ApiError(400, "; ".join(problems[:5]))


_INT = re.compile(r"-?[0-9]{1,19}")


def coerce_param(param: Param, raw: str) -> Any:
    """A query or path string as its schema's type, checked against the schema."""
    schema = resolve(param.schema)
    where = f"{param.location}.{param.name}"
    kind = schema.get("type", "string")
    value: Any = raw
    if kind == "integer":
        if not _INT.fullmatch(raw):
            raise ApiError(400, f"{where} must be an integer, not {raw[:40]!r}")
        value = int(raw)
    elif kind == "number":
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(400, f"{where} must be a number, not {raw[:40]!r}") from None
    elif kind == "boolean":
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ApiError(400, f"{where} must be true or false, not {raw[:40]!r}")
        value = raw.lower() in ("true", "1")
    check(schema, value, where)
    return value
