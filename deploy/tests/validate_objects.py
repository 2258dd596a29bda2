#!/usr/bin/env python3
"""Validate rendered Kubernetes objects offline.

Every object is checked with kubernetes-validate (strict: unknown fields are
errors) against one fixed Kubernetes version. Objects of custom resource kinds
that kubernetes-validate has no schema for are checked against the small
structural schemas in crd_schemas.py instead; any other kind without a schema
fails, so a typo in apiVersion or kind cannot slip through as "unknown".

Usage: validate_objects.py --kubernetes-version 1.34.0 FILE...
Prints one line per object and a closing "N passed, N failed" line.
"""

import argparse
import sys

import yaml

try:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
except ImportError:  # pragma: no cover - validate.sh installs it
    sys.exit("kubernetes-validate is not installed (pip install kubernetes-validate)")

import jsonschema

sys.path.insert(0, __import__("os").path.dirname(__file__))
from crd_schemas import CRD_SCHEMAS  # noqa: E402


def load_objects(path):
    """All non-empty YAML documents of a file, with their position."""
    with open(path, encoding="utf-8") as handle:
        docs = list(yaml.safe_load_all(handle))
    for index, doc in enumerate(docs):
        if doc:
            if doc.get("kind", "").endswith("List") and "items" in doc:
                for item_index, item in enumerate(doc["items"]):
                    yield f"{path}#{index}.{item_index}", item
            else:
                yield f"{path}#{index}", doc


def describe(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('apiVersion')}/{obj.get('kind')} {meta.get('name')}"


def validate_custom(obj):
    """Errors of an object whose kind is in CRD_SCHEMAS, or None if unknown."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schema = CRD_SCHEMAS.get(key)
    if schema is None:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    passed = failed = 0
    custom_kinds = set()
    for path in args.files:
        for where, obj in load_objects(path):
            name = describe(obj)
            if "apiVersion" not in obj or "kind" not in obj:
                print(f"FAIL {where}: no apiVersion/kind")
                failed += 1
                continue
            try:
                kubernetes_validate.validate(obj, args.kubernetes_version, strict=True)
                passed += 1
                continue
            except ValidationError as err:
                location = ".".join(str(p) for p in err.path)
                print(f"FAIL {where} {name}: {location}: {err.message}")
                failed += 1
                continue
            except SchemaNotFoundError:
                pass
            errors = validate_custom(obj)
            if errors is None:
                print(f"FAIL {where} {name}: no Kubernetes schema and no custom-resource schema")
                failed += 1
            elif errors:
                for error in errors:
                    print(f"FAIL {where} {name}: {error}")
                failed += 1
            else:
                custom_kinds.add(f"{obj['apiVersion']}/{obj['kind']}")
                passed += 1
    if custom_kinds:
        print(
            "note: custom resources checked against crd_schemas.py, not the cluster's CRDs: "
            + ", ".join(sorted(custom_kinds))
        )
    print(f"validate: {passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
