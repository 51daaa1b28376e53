"""A small checker of requests and answers against an OpenAPI document (3.x, as the D-Tools
SI document is written: ``type`` lists, ``$ref`` to components). openapi-core does not read
the document's 3.2 version, so this checks what matters here: every request's method, path
and query parameters are documented, and every property of an answer is a documented
property of its schema with a documented type (names compared case-insensitively: the
document is camelCase, the live API PascalCase)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
         "array": list, "object": dict, "null": type(None)}


class Spec:
    def __init__(self, path: Path) -> None:
        self.doc = yaml.safe_load(path.read_text())
        self.schemas = self.doc["components"]["schemas"]

    def operation(self, method: str, path: str) -> dict:
        for template, ops in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if re.match(pattern, path, re.I) and method.lower() in ops:
                literal = not re.search(r"\{", template)
                if literal or not any(re.match("^" + t + "$", path, re.I)
                                      for t in self.doc["paths"] if "{" not in t):
                    return ops[method.lower()]
        raise AssertionError(f"{method} {path} is not in the vendor's document")

    def check_request(self, method: str, path: str, query: str) -> None:
        op = self.operation(method, path)
        names = {p["name"].lower() for p in op.get("parameters", []) if p["in"] == "query"}
        for key, _ in parse_qsl(query, keep_blank_values=True):
            base = re.sub(r"\[\d*\]$", "", key).lower()
            assert base in names, f"{method} {path}: query parameter {key!r} is not documented"

    def response_schema(self, method: str, path: str) -> dict | None:
        op = self.operation(method, path)
        content = op["responses"]["200"].get("content") or {}
        media = content.get("application/json")
        return None if media is None else media["schema"]

    def check_body(self, schema: dict, value: Any, where: str = "$") -> None:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
        types = schema.get("type")
        if types is not None:
            allowed = tuple(TYPES[t] for t in ([types] if isinstance(types, str) else types))
            if isinstance(value, bool) and bool not in allowed:
                raise AssertionError(f"{where}: a boolean where {types} is documented")
            assert isinstance(value, allowed), f"{where}: {value!r} is not {types}"
        if isinstance(value, dict):
            props = {k.lower(): v for k, v in (schema.get("properties") or {}).items()}
            for key, item in value.items():
                assert key.lower() in props, f"{where}.{key} is not a documented property"
                self.check_body(props[key.lower()], item, f"{where}.{key}")
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self.check_body(schema["items"], item, f"{where}[{i}]")
