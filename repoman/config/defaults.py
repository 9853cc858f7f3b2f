"""Fill the defaults Triton reports for a model config, and check the name against the folder."""

from __future__ import annotations

from typing import Any

from repoman.config.tree import Positions, issue_at
from repoman.errors import ConfigIssue


def apply(
    doc: dict[str, Any],
    positions: Positions,
    file: str,
    *,
    model_name: str | None,
    default_platform: str | None,
) -> list[ConfigIssue]:
    """Fill defaults into ``doc`` in place; return issues about the model's name.

    Expects a schema-valid ``doc``. Defaults follow what Triton reports for a loaded model:
    one CPU instance, the latest version, max_batch_size 0.
    """
    issues: list[ConfigIssue] = []
    name = doc.get("name")
    if name is None:
        if model_name is None:
            issues.append(
                issue_at(
                    file,
                    positions.key(()),
                    "name",
                    "expected a `name` field (or a model folder to take it from), found neither",
                )
            )
        name = model_name or ""
        doc["name"] = name
    elif name == "":
        issues.append(
            issue_at(file, positions.value(("name",)), "name", "expected a model name, found ''")
        )
    elif model_name is not None and name != model_name:
        issues.append(
            issue_at(
                file,
                positions.value(("name",)),
                "name",
                f"expected the model folder's name '{model_name}', found '{name}'",
                "a model's name must match its folder; rename one of them",
            )
        )
    if "platform" not in doc and "backend" not in doc and default_platform:
        doc["platform"] = default_platform
    doc.setdefault("max_batch_size", 0)
    policy = doc.setdefault("version_policy", {"latest": {"num_versions": 1}})
    if isinstance(policy.get("latest"), dict):
        # NOTE: `latest {}` leaves num_versions unset; proto3 would read that as 0, which
        # serves nothing, so repoman reads it as the documented default of 1.
        policy["latest"].setdefault("num_versions", 1)
    _instance_groups(doc, name)
    return issues


def _instance_groups(doc: dict[str, Any], model_name: str) -> None:
    groups = doc.get("instance_group") or [{}]
    for index, group in enumerate(groups):
        group.setdefault("name", f"{model_name}_{index}")
        if group.get("kind", "KIND_AUTO") == "KIND_AUTO":
            # Triton's rule for an unset kind: the GPUs a group lists make it a GPU group.
            group["kind"] = "KIND_GPU" if group.get("gpus") else "KIND_CPU"
        group.setdefault("count", 1)
    doc["instance_group"] = groups
