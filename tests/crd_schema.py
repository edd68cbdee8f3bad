"""Validate custom resources against their CustomResourceDefinition's openAPIV3Schema, as strictly as the API server.

`kubectl apply --validate=strict` (server-side field validation "Strict") makes the
API server refuse what it would otherwise prune in silence: a field the structural
schema does not list. This module turns each CRD version's `openAPIV3Schema` into a
JSON Schema that the `jsonschema` library checks with the same rules:

- an object whose schema lists `properties` refuses any other key, unless it has
  `additionalProperties` (a map) or `x-kubernetes-preserve-unknown-fields: true`;
  an object schema with neither properties nor additionalProperties keeps nothing,
  so it refuses every key (that is what pruning would drop);
- `x-kubernetes-int-or-string: true` takes an integer or a string;
  `nullable: true` also takes null;
- `metadata` of the object itself (and of an `x-kubernetes-embedded-resource`) is
  an ObjectMeta, which the CRD schema leaves as `type: object`: it is checked
  against ObjectMeta's fields (k8s.io/apimachinery pkg/apis/meta/v1 types.go), with
  the name rule the API server applies to custom resources (a DNS-1123 subdomain)
  and label values' syntax;
- `apiVersion` must be one of the CRD's served versions and `kind` its kind.

Not checked: CEL rules (`x-kubernetes-validations`), list-map key uniqueness and
`format` (int32 ranges, date-time); admission webhooks (KServe's validator) run on
top of all this and are replayed separately (tests/test_kserve.py).

Usage: `python tests/crd_schema.py FILE...` prints `ok KIND NAME` per custom resource
or one line per problem, and exits 1 on any.
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent / "data" / "crds"
# ObjectMeta as a client may send it (k8s.io/apimachinery pkg/apis/meta/v1 types.go, type ObjectMeta);
# the server-set fields are accepted too, since a body read back and patched carries them.
_LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string",
            "maxLength": 253,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        },
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": _LABEL_VALUE},
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "selfLink": {"type": "string"},
        "managedFields": {"type": "array", "items": {"type": "object"}},
    },
}


def strict(node: Any, *, root: bool = False) -> Any:
    """The JSON Schema (draft 4, OpenAPI 3.0's base) that refuses what the API server would prune."""
    if not isinstance(node, dict):
        return node
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k not in ("nullable", "description")}
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {name: strict(child) for name, child in out[key].items()}
    for key in ("items", "not"):
        if key in out:
            out[key] = strict(out[key])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(child) for child in out[key]]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if root or node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        out["properties"]["metadata"] = OBJECT_META
        out["properties"].setdefault("apiVersion", {"type": "string"})
        out["properties"].setdefault("kind", {"type": "string"})
    if (
        out.get("type") == "object"
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


@functools.cache
def load_crd(filename: str) -> dict:
    """A CRD from tests/data/crds, parsed."""
    return yaml.load((CRD_DIR / filename).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def _crds_by_kind() -> dict[tuple[str, str], str]:
    """(group, kind) -> file name, for every v0.20+ CRD kept as test data (not the older KServe copy)."""
    found = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        if path.name.count(".yaml") == 1 and ".v0." not in path.name:
            crd = load_crd(path.name)
            found[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = path.name
    return found


@functools.cache
def validator(filename: str, version: str) -> jsonschema.Draft4Validator:
    """The strict validator for one version of the CRD in `filename`."""
    crd = load_crd(filename)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict(copy.deepcopy(entry["schema"]["openAPIV3Schema"]), root=True)
    return jsonschema.Draft4Validator(schema)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(root)"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties") or {})
        unknown = sorted(set(error.instance) - known)
        return f'unknown field "{unknown[0]}"' if len(unknown) == 1 else f"unknown fields {unknown}"
    return error.message


def problems(document: dict, crd_file: str | None = None) -> list[str]:
    """Every reason the API server (with strict field validation) would refuse `document`; [] if none.

    The CRD is found by the document's group and kind among tests/data/crds, or named by `crd_file`.
    """
    api_version, kind = str(document.get("apiVersion", "")), document.get("kind")
    group, _, version = api_version.rpartition("/")
    if crd_file is None:
        crd_file = _crds_by_kind().get((group, kind))
        if crd_file is None:
            return [f"no CRD for apiVersion {api_version!r} kind {kind!r} in {CRD_DIR}"]
    crd = load_crd(crd_file)
    if group != crd["spec"]["group"] or kind != crd["spec"]["names"]["kind"]:
        return [f"apiVersion/kind {api_version}/{kind} is not {crd['spec']['group']}/{crd['spec']['names']['kind']}"]
    served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    if version not in served:
        return [f"apiVersion {api_version}: {crd['metadata']['name']} serves {', '.join(served)}"]
    errors = sorted(validator(crd_file, version).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{_where(e)}: {_message(e)}" for e in errors]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what the API server makes of an application/merge-patch+json body."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def main(paths: list[str]) -> int:
    failed = False
    for path in paths:
        for document in yaml.safe_load_all(Path(path).read_text()):
            if not document or "." not in str(document.get("apiVersion", "")).split("/")[0]:
                continue  # core kinds (no group with a dot) are kubernetes-validate's
            found = problems(document)
            name = (document.get("metadata") or {}).get("name")
            for line in found:
                print(f"{path}: {document.get('kind')} {name}: {line}")
            if not found:
                print(f"ok {document.get('kind')} {name}")
            failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
