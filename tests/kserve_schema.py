"""Check Kubernetes manifests against KServe's own Python models (the `kserve` SDK's V1beta1InferenceService).

Run by the interpreter of .venv-kserve (scripts/setup-kserve-check.sh), not the
project's: every kserve release pins pandas<3, which the project's venv does not
have. Usage: `python tests/kserve_schema.py FILE...` (YAML, one or more
documents each; `-` reads JSON documents, one per line, from stdin). Prints
`ok KIND NAME` per document, or one line per problem, and exits 1 on any.

The SDK's generated models accept unknown keys silently when deserialising,
so this walks each document against their `attribute_map`/`openapi_types`
(KServe's types from kserve.models, core types from kubernetes.client.models)
and builds the model objects, which runs their client-side validation
(required fields, enums).
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version

import kserve.models
import kubernetes.client.models
import yaml

KSERVE_VERSION = version("kserve")
# The SDK's type names (kserve's generator writes list[X]/dict(str, X), the kubernetes client List[X]/Dict[str, X]).
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}
TOP_LEVEL = {
    "InferenceService": "V1beta1InferenceService",
    "ServiceAccount": "V1ServiceAccount",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
}


class SchemaError(ValueError):
    pass


def model_class(name: str) -> type:
    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise SchemaError(f"no model named {name} in kserve {KSERVE_VERSION} or the kubernetes client")


def build(data, type_name: str, where: str):
    """The model object for `data` as `type_name`; SchemaError naming the first key that does not fit."""
    if data is None:
        return None
    if match := re.fullmatch(r"[lL]ist\[(.*)\]", type_name):
        if not isinstance(data, list):
            raise SchemaError(f"{where}: expected a list, got {type(data).__name__}")
        return [build(item, match.group(1), f"{where}[{i}]") for i, item in enumerate(data)]
    if match := (
        re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name) or re.fullmatch(r"Dict\[([^,]*), (.*)\]", type_name)
    ):
        if not isinstance(data, dict):
            raise SchemaError(f"{where}: expected a mapping, got {type(data).__name__}")
        return {key: build(value, match.group(2), f"{where}.{key}") for key, value in data.items()}
    if type_name in PRIMITIVES:
        expected = PRIMITIVES[type_name]
        if (isinstance(data, bool) and type_name != "bool") or not isinstance(data, expected):
            raise SchemaError(f"{where}: expected {type_name}, got {data!r}")
        return data
    if type_name == "ResourceQuantity" or type_name == "IntOrString":
        if not isinstance(data, (str, int, float)) or isinstance(data, bool):
            raise SchemaError(f"{where}: expected a quantity, got {data!r}")
        return data
    klass = model_class(type_name)
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: expected a {type_name} mapping, got {data!r}")
    by_json_key = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json_key))
    if unknown:
        raise SchemaError(f"{where}.{unknown[0]}: not a field of {type_name} (kserve {KSERVE_VERSION})")
    kwargs = {
        by_json_key[key]: build(value, klass.openapi_types[by_json_key[key]], f"{where}.{key}")
        for key, value in data.items()
    }
    try:
        return klass(**kwargs)
    except ValueError as exc:  # the models' own validation (pydantic's ValidationError is a ValueError)
        raise SchemaError(f"{where}: {' '.join(str(exc).split())}") from None


def check(document: dict) -> str:
    kind = document.get("kind")
    if kind not in TOP_LEVEL:
        raise SchemaError(f"kind {kind!r}: not one this checker knows ({', '.join(TOP_LEVEL)})")
    obj = build(document, TOP_LEVEL[kind], kind)
    return f"ok {kind} {obj.metadata.name}"


def documents(paths: list[str]):
    for path in paths:
        if path == "-":
            for line in sys.stdin:
                if line.strip():
                    yield "stdin", json.loads(line)
        else:
            with open(path) as handle:
                for document in yaml.safe_load_all(handle):
                    if document and document.get("kind") != "Kustomization":
                        yield path, document


def main(paths: list[str]) -> int:
    failed = False
    for path, document in documents(paths):
        try:
            print(check(document))
        except SchemaError as exc:
            print(f"{path}: {exc}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
