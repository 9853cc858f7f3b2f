"""The scan: pure reads of the repository, never stopped by one odd or vanishing folder, and
without trusting it (links out, oversized config files)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from repoman.aspired import Aspired
from repoman.errors import ConfigError
from repoman.source import scan as scan_module
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model, scan_repository
from repoman.source.source import RepositorySource
from tests import fakes
from tests.fakes import write_model
from tests.source.test_source import Recorder, registry


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for name in ("a", "b", "c"):
        fakes.write_model(root, name)
    return root


def vanishing(name: str, real=scan_module.read_model):
    """read_model, except that model ``name`` disappears while it is being read."""

    def read(path: Path, *args, **kwargs):
        if path.name == name:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path, *args, **kwargs)

    return read


def test_a_folder_vanishing_mid_scan_skips_it_alone(repo, monkeypatch) -> None:
    monkeypatch.setattr(scan_module, "read_model", vanishing("b"))
    found = scan_repository(repo, ScanOptions(), now=time.time())
    assert sorted(found.models) == ["a", "c"]
    assert found.unreadable == ("b",)
    assert any(
        "b: could not be read this pass (No such file or directory)" in line
        for line in found.ignored
    )


def test_odd_entries_never_stop_the_scan(repo) -> None:
    (repo / "not a model!").mkdir()
    (repo / "loose_file.txt").write_text("x")
    (repo / "a" / "0001").mkdir()
    (repo / "a" / "\u0661").mkdir()  # an Arabic-Indic digit one: not a version number
    (repo / "a" / "latest").mkdir()
    (repo / "dangling").symlink_to(repo / "nowhere")
    found = scan_repository(repo, ScanOptions(), now=time.time())
    assert sorted(found.models) == ["a", "b", "c"]
    assert [v.number for v in found.models["a"].versions] == [1]
    reasons = "\n".join(found.ignored)
    assert "not a valid model name" in reasons
    assert "0001: version folders must not start with 0" in reasons
    assert "\u0661: not a version folder" in reasons and "latest: not a version folder" in reasons


def test_a_model_unreadable_for_a_pass_is_not_unloaded(repo, monkeypatch) -> None:
    target = Recorder()
    source = RepositorySource(
        repo, target, Resolver(registry(threading.Event())), mode="poll", rescan_every=0
    )

    async def go() -> list[Aspired]:
        await source.start()
        assert target.applied["b"].versions  # it is served
        target.calls.clear()
        monkeypatch.setattr(scan_module, "read_model", vanishing("b"))
        (repo / "a" / "2").mkdir()  # something else changes in the same pass
        (repo / "a" / "2" / "model.txt").write_text("fake")
        await source.rescan()
        await source.idle()
        await source.stop()
        return target.calls

    calls = asyncio.run(go())
    by_model = {c.model: c for c in calls}
    assert "b" not in by_model  # nothing asked of b while it could not be read
    assert [v.version for v in by_model["a"].versions] == [2]  # the rest of the pass counts


@pytest.mark.parametrize("name", ["config.pbtxt", "config.yaml"])
def test_a_model_config_linked_from_outside_the_repository_is_not_read(tmp_path, name):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    (repo / "m" / "config.pbtxt").unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("max_batch_size: 8\n")
    (repo / "m" / name).symlink_to(secret)
    config_file = scan_repository(repo, now=0.0).models["m"].config_file
    assert config_file is not None and config_file.text == ""
    assert isinstance(config_file.error, ConfigError)
    assert "leads out of the repository" in str(config_file.error)


def test_a_model_config_linked_from_inside_the_repository_is_read(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    (repo / "shared").mkdir()
    (repo / "m" / "config.pbtxt").rename(repo / "shared" / "config.pbtxt")
    (repo / "m" / "config.pbtxt").symlink_to(repo / "shared" / "config.pbtxt")
    config_file = read_model(repo / "m", ScanOptions(), now=0.0).config_file
    assert config_file is not None and config_file.error is None
    assert 'name: "m"' in config_file.text


def test_a_version_config_linked_from_outside_refuses_the_version(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    (tmp_path / "secret.pbtxt").write_text("max_batch_size: 8\n")
    (repo / "m" / "1" / "config.pbtxt").symlink_to(tmp_path / "secret.pbtxt")
    (version,) = read_model(repo / "m", ScanOptions(), now=0.0).versions
    assert "leads out of the repository" in version.refused and version.config_file is None


def test_a_config_file_over_the_size_limit_is_refused_unread(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    with (repo / "m" / "config.pbtxt").open("r+b") as handle:
        handle.truncate(64 << 20)  # sparse: 64 MiB of NULs, which would decode fine
    config_file = read_model(repo / "m", ScanOptions(), now=0.0).config_file
    assert config_file is not None and config_file.text == ""
    assert "expected a config file of at most 1048576 bytes (1 MiB), found 67108864 bytes" in str(
        config_file.error
    )


def test_the_size_limit_can_be_set_and_applies_to_version_configs_too(tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "m")
    (repo / "m" / "1" / "config.pbtxt").write_text("#" * 2000)
    options = ScanOptions(max_config_bytes=1000)
    folder = read_model(repo / "m", options, now=0.0)
    assert folder.config_file is not None and folder.config_file.error is None
    (version,) = folder.versions
    assert version.config_file is not None
    assert "at most 1000 bytes, found 2000 bytes" in str(version.config_file.error)


@pytest.mark.parametrize(
    ("layout", "is_model"),
    [
        ({"config.pbtxt": ""}, True),  # KServe's single model: the files at the root
        ({"config.yaml": ""}, True),
        ({"1/model.onnx": ""}, True),  # no config: auto-completed
        ({}, False),  # an empty repository, filled later (KServe's multi-model agent)
        ({"digits/config.pbtxt": "", "digits/1/model.onnx": ""}, False),
        ({"0/model.onnx": "", "notes.txt": ""}, False),
    ],
)
def test_a_folder_is_one_model_when_a_config_or_a_version_folder_is_at_its_top(
    tmp_path, layout, is_model
) -> None:
    for relative, text in layout.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert scan_module.looks_like_a_model(tmp_path) is is_model


def test_a_one_model_repository_is_scanned_as_that_model_under_the_name_given(tmp_path) -> None:
    fakes.write_model(tmp_path, "mnt", versions=(1, 2))
    root = tmp_path / "mnt"
    found = scan_repository(root, ScanOptions(), now=time.time(), single="digits")
    assert list(found.models) == ["digits"]
    model = found.models["digits"]
    assert model.path == root and [v.number for v in model.versions] == [1, 2]
    assert model.config_file is not None and model.config_file.path == root / "config.pbtxt"
    # a link out of the one-model folder is out of the repository
    (tmp_path / "elsewhere").mkdir()
    (root / "3").symlink_to(tmp_path / "elsewhere")
    refused = scan_repository(root, ScanOptions(), now=time.time(), single="digits")
    assert "leads out of the repository" in refused.models["digits"].version(3).refused
