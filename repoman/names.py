"""Model names, version numbers and the file names configs give: one rule each, for all users."""

from __future__ import annotations

import re
from pathlib import Path

from repoman.errors import InvalidRequest, RepomanError

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


MAX_FILE_NAME_PART = 255
"""Bytes in one part of a file name a config gives (the file systems' NAME_MAX)."""
MAX_FILE_NAME = 1024
"""Characters in a whole file name a config gives (its folders included)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def file_name_problem(name: str) -> str:
    """Why ``name`` cannot name a file inside a folder, or "" when it can.

    A config's file names (``default_model_filename``, a warm-up's ``input_data_file``) are
    relative names below their folder: no absolute path, no ``..`` or ``.`` part, no empty
    part (``a//b``, a trailing ``/``), no backslash or control character. Subfolders are
    allowed (``onnx/model.onnx``): a relative name without ``..`` cannot leave the folder.
    """
    if not name:
        return "expected a file name, found an empty one"
    if len(name) > MAX_FILE_NAME:
        return f"expected at most {MAX_FILE_NAME} characters, found {len(name)}"
    if name.startswith("/"):
        return "expected a name relative to its folder, found an absolute path"
    if "\\" in name or _CONTROL.search(name):
        return "expected no backslash or control character, found one"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            found = f"a '{part}' part" if part else "an empty part ('//' or a trailing '/')"
            return f"expected a name that stays inside its folder, found {found}"
        if len(part.encode()) > MAX_FILE_NAME_PART:
            return f"expected parts of at most {MAX_FILE_NAME_PART} bytes, found a longer one"
    return ""


def path_inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, or RepomanError unless it is a file name (``file_name_problem``)
    that stays inside ``folder`` once symlinks are resolved.

    Config validation refuses bad names already; this is the check where a path is built,
    so a config that skipped validation, or a symlink in the folder, cannot reach any other
    file on the machine.
    """
    problem = file_name_problem(name)
    if problem:
        raise RepomanError(f"{what} '{name}' is refused: {problem}")
    path = folder / name
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        raise RepomanError(
            f"{what} '{name}' leads out of {folder} (a symlink); refusing to open it"
        ) from None
    return path
