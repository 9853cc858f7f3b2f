"""The scan: what is on disk, read without trusting it (links out, oversized config files)."""

from __future__ import annotations

import pytest

from repoman.errors import ConfigError
from repoman.source.scan import ScanOptions, read_model, scan_repository
from tests.fakes import write_model


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
