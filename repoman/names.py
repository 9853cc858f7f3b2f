"""Model names and version numbers: the one pattern each, for URLs and folders alike."""

from __future__ import annotations

import re

from repoman.errors import InvalidRequest

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}", re.ASCII)
"""Model names repoman accepts: they become URL segments and folder names."""

VERSION = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)
"""Version numbers: positive, no leading zero, ASCII digits only (not Unicode ones)."""


def valid_model_name(name: str) -> bool:
    # NOTE: fullmatch, not match with "$": "$" also matches before a trailing newline.
    return MODEL_NAME.fullmatch(name) is not None


def valid_version(text: str) -> bool:
    return VERSION.fullmatch(text) is not None


def check_model_name(name: str) -> str:
    """``name`` itself, or InvalidRequest saying what a model name may be."""
    if not valid_model_name(name):
        raise InvalidRequest(
            "invalid model name: expected letters, digits, '_', '.' or '-' "
            "(not starting with '.' or '-', at most 128 characters)"
        )
    return name


def parse_version(text: str) -> int:
    """A version number from a URL segment; InvalidRequest unless it is one."""
    if not valid_version(text):
        raise InvalidRequest(f"invalid model version '{text}': expected a positive integer")
    return int(text)
