"""Config fields that name files: each must be a relative name that stays inside its folder."""

from __future__ import annotations

from repoman.config.checker import Checker
from repoman.config.tree import ANY_INDEX, ANY_KEY, KeyPath, find_paths
from repoman.names import file_name_problem

# Every field of the schema that names a file, with the folder it is read from (ANY_INDEX
# and ANY_KEY stand for any list index and any map key). An empty value means "unset" where
# Triton reads it so.
_FILE_FIELDS: tuple[tuple[KeyPath, str, bool], ...] = (
    (("default_model_filename",), "inside the version folder, e.g. model.onnx", True),
    (
        ("model_warmup", ANY_INDEX, "inputs", ANY_KEY, "input_data_file"),
        "inside the model's warmup/ folder",
        False,
    ),
    # NOTE: the next two are accepted but ignored today; a name that leaves its folder is
    # refused anyway, so that implementing them later cannot open a hole.
    (("cc_model_filenames", ANY_KEY), "inside the version folder", False),
    (("output", ANY_INDEX, "label_filename"), "inside the model folder", True),
)


def check_file_names(checker: Checker) -> None:
    """A config must never name a file outside its model's folders (``/etc/passwd``,
    ``../../other/model.py``): the backend would open, or import and run, that file."""
    for pattern, where, empty_is_unset in _FILE_FIELDS:
        for path, value in find_paths(checker.doc, pattern):
            if not isinstance(value, str) or (empty_is_unset and value == ""):
                continue
            problem = file_name_problem(value)
            if problem:
                checker.fail(path, problem, f"name a file {where}")
