"""Names: model names, versions and the file names configs give (kept inside their folder)."""

from __future__ import annotations

import pytest

from repoman.errors import RepomanError
from repoman.names import file_name_problem, path_inside


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "..",
        "../x",
        "a/../b",
        "./a",
        "a/.",
        "a//b",
        "a/",
        "a\\b",
        "a\x00b",
        "a\nb",
        "x" * 256,
        "a/" * 600,
    ],
)
def test_names_that_could_leave_their_folder_are_refused(name: str) -> None:
    problem = file_name_problem(name)
    assert problem.startswith("expected") and "found" in problem


@pytest.mark.parametrize("name", ["model.onnx", "a..b", "sub/model.py", ".hidden", "é.onnx"])
def test_relative_names_are_accepted(name: str) -> None:
    assert file_name_problem(name) == ""


def test_path_inside_refuses_a_symlink_leading_out(tmp_path) -> None:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (tmp_path / "secret.py").write_text("raise SystemExit")
    (folder / "model.py").symlink_to(tmp_path / "secret.py")
    with pytest.raises(RepomanError, match=r"default_model_filename 'model.py' leads out of"):
        path_inside(folder, "model.py", "default_model_filename")


def test_path_inside_accepts_files_and_a_version_folder_that_is_a_link_inside(tmp_path) -> None:
    (tmp_path / "m" / "1" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "2").symlink_to(tmp_path / "m" / "1")
    assert path_inside(tmp_path / "m" / "2", "sub/model.onnx", "f") == (
        tmp_path / "m" / "2" / "sub" / "model.onnx"
    )


@pytest.mark.parametrize("name", ["/etc/passwd", "../2/model.py"])
def test_path_inside_refuses_bad_names_even_unvalidated(tmp_path, name: str) -> None:
    with pytest.raises(RepomanError, match="is refused: expected"):
        path_inside(tmp_path, name, "default_model_filename")
