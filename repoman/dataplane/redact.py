"""Keeping the server's directory layout out of answers: repository paths made relative."""

from __future__ import annotations

import re
from pathlib import Path

ROOT_WORD = "<repository>"


class Redactor:
    """Rewrites paths under the model repository relative to it, in text bound for clients.

    ``/srv/models/digits/config.pbtxt:3:1: ...`` becomes ``digits/config.pbtxt:3:1: ...`` and
    the root on its own becomes ``<repository>``. The root is matched as given, made absolute
    and with symlinks resolved: messages come from code (and libraries) spelling it each way.
    Thread-safe; logs keep the absolute paths, only answers go through this.
    """

    def __init__(self, root: Path | None) -> None:
        spellings: set[str] = set()
        if root is not None:
            for path in (root, root.absolute(), root.resolve()):
                text = str(path).rstrip("/")
                if text not in ("", "."):
                    spellings.add(text)
        self._pattern: re.Pattern[str] | None = None
        if spellings:
            # Longest first, so "/a/b" wins over "/a"; not inside a longer name ("/a/bc").
            alternatives = "|".join(map(re.escape, sorted(spellings, key=len, reverse=True)))
            self._pattern = re.compile(rf"(?<![\w.\-/])(?:{alternatives})(?:/+|(?![\w.\-]))")

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(_relative, text)


def _relative(match: re.Match[str]) -> str:
    return "" if match.group().endswith("/") else ROOT_WORD
