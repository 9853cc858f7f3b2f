"""Redactor: repository paths in answers become relative, other text stays as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from repoman.dataplane.redact import Redactor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/srv/models/digits/config.pbtxt:3:1: error: x", "digits/config.pbtxt:3:1: error: x"),
        (
            "Load model from /srv/models/m/1/model.onnx failed:Protobuf parsing failed.",
            "Load model from m/1/model.onnx failed:Protobuf parsing failed.",
        ),
        ("model repository /srv/models is empty", "model repository <repository> is empty"),
        ("'/srv/models/' and '/srv/models'", "'' and '<repository>'"),
        ("/srv/models//m", "m"),
        # Not the repository: a longer name, or a folder that merely ends the same way.
        ("/srv/models2/m and /srv/models.bak", "/srv/models2/m and /srv/models.bak"),
        ("/x/srv/models/m", "/x/srv/models/m"),
        ("nothing to see", "nothing to see"),
    ],
)
def test_paths_under_the_repository_are_made_relative(text: str, expected: str) -> None:
    assert Redactor(Path("/srv/models"))(text) == expected


def test_the_root_is_matched_as_given_absolute_and_resolved(tmp_path: Path, monkeypatch) -> None:
    real = tmp_path / "real"
    (real / "m").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.chdir(tmp_path)
    redact = Redactor(Path("link"))
    assert redact(f"{real}/m/config.pbtxt") == "m/config.pbtxt"
    assert redact(f"{link}/m/config.pbtxt") == "m/config.pbtxt"
    assert redact("link/m/config.pbtxt: bad") == "m/config.pbtxt: bad"
    assert redact("unlink/m") == "unlink/m"


def test_without_a_repository_nothing_changes() -> None:
    assert Redactor(None)("/srv/models/m") == "/srv/models/m"
