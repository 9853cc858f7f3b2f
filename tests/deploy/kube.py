"""Reading the manifests under deploy/ and KServe's CRD schemas (../shared/kserve/crd), shared
by the manifest and contract tests."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.serverproc import ROOT

DEPLOY = ROOT / "deploy"
KSERVE = DEPLOY / "kserve"
CRDS = ROOT.parent / "shared" / "kserve" / "crd"


@dataclass(frozen=True)
class Manifest:
    path: Path
    index: int
    """The document's position in its file."""
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}#{self.index} ({self.kind} {self.name})"


def manifests() -> list[Manifest]:
    """Every YAML document under deploy/, in file order."""
    found = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for index, body in enumerate(yaml.safe_load_all(path.read_text())):
            if body is not None:
                found.append(Manifest(path, index, body))
    return found


def one(kind: str, name: str, file: str | None = None) -> Manifest:
    """The one manifest of ``kind`` named ``name`` (in deploy/kserve/``file``, when given)."""
    [found] = [
        m for m in manifests()
        if m.kind == kind and m.name == name and (file is None or m.path == KSERVE / file)
    ]
    return found


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema the API server applies, made strict."""
    if not CRDS.is_dir():
        pytest.skip(f"KServe's CRD schemas are not here ({CRDS}: ../shared is only beside the "
                    "project's own checkouts, not a user's clone)")
    return _crd_schemas()


@cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        # NOTE: libyaml's loader when there is one: the InferenceService CRD is 2 MB of YAML.
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = strict(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict(schema: Any) -> Any:
    """The schema as the API server applies it with strict field validation (kubectl's
    default): an object that lists its properties refuses others, unless it says it keeps
    unknown fields; ``x-kubernetes-int-or-string`` takes either. Other ``x-kubernetes-*``
    keys and OpenAPI's ``format``s are annotations to jsonschema, as they are here."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


DNS_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
"""A DNS-1035 label: what KServe (and Kubernetes for Services) accepts as a name."""

OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL},
        "namespace": {"type": "string", "pattern": DNS_LABEL},
        "labels": {
            "type": "object",
            "additionalProperties": {
                "type": "string",
                "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$",
            },
        },
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
"""The core Kubernetes ObjectMeta fields a manifest here may set (CRDs leave it to the API
server, which checks names and that labels and annotations map strings to strings)."""
