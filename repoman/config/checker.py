"""The issue collector the config rules share: each issue placed where its field is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from repoman.config.schema import format_path
from repoman.config.tree import PathItem, Positions, issue_at
from repoman.errors import ConfigIssue


class Checker:
    """Collects issues about ``doc``, each placed at the source position of the path it names.

    ``at="value"`` points at the value (the offending number), ``at="key"`` at the field's
    name (for problems of a whole block, such as a reshape that does not fit its dims).
    """

    def __init__(self, doc: dict[str, Any], positions: Positions, file: str) -> None:
        self.doc = doc
        self.positions = positions
        self.file = file
        self.issues: list[ConfigIssue] = []

    def fail(
        self, path: Sequence[PathItem], message: str, hint: str = "", *, at: str = "value"
    ) -> None:
        pos = self.positions.key(path) if at == "key" else self.positions.value(path)
        self.issues.append(issue_at(self.file, pos, format_path(path), message, hint))

    def doc_at(self, path: Sequence[PathItem]) -> Any:
        """The value at ``path`` in the doc (the path must exist)."""
        value: Any = self.doc
        for item in path:
            value = value[item]
        return value
