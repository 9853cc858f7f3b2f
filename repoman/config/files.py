"""Config fields that name files: each must be a relative name that stays inside its folder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from repoman.config.checker import Checker
from repoman.config.tree import KeyPath
from repoman.names import file_name_problem

# Every field of the schema that names a file, with the folder it is read from. "*" stands
# for any list index or map key. An empty value means "unset" where Triton reads it so.
_FILE_FIELDS: tuple[tuple[KeyPath, str, bool], ...] = (
    (("default_model_filename",), "inside the version folder, e.g. model.onnx", True),
    (
        ("model_warmup", "*", "inputs", "*", "input_data_file"),
        "inside the model's warmup/ folder",
        False,
    ),
    # NOTE: the next two are accepted but ignored today; a name that leaves its folder is
    # refused anyway, so that implementing them later cannot open a hole.
    (("cc_model_filenames", "*"), "inside the version folder", False),
    (("output", "*", "label_filename"), "inside the model folder", True),
)


def check_file_names(checker: Checker) -> None:
    """A config must never name a file outside its model's folders (``/etc/passwd``,
    ``../../other/model.py``): the backend would open, or import and run, that file."""
    for pattern, where, empty_is_unset in _FILE_FIELDS:
        for path, value in _find(checker.doc, pattern):
            if not isinstance(value, str) or (empty_is_unset and value == ""):
                continue
            problem = file_name_problem(value)
            if problem:
                checker.fail(path, problem, f"name a file {where}")


def _find(value: Any, pattern: KeyPath, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if not pattern:
        yield prefix, value
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*" and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _find(item, rest, (*prefix, index))
    elif head == "*" and isinstance(value, dict):
        for key, item in value.items():
            yield from _find(item, rest, (*prefix, key))
    elif isinstance(value, dict) and head in value:
        yield from _find(value[head], rest, (*prefix, head))
