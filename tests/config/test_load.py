"""The public API on model folders: finding the config file and loading it."""

from __future__ import annotations

from pathlib import Path

import pytest

import repoman.config
from repoman.config import find_config_file, load_model_config, parse_model_config
from repoman.errors import ConfigError

PBTXT = """name: "dense"
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
YAML = """input: [{name: x, data_type: FP32, dims: [4]}]
output: [{name: y, data_type: FP32, dims: [4]}]
"""


def model_dir(tmp_path: Path, files: dict[str, str], name: str = "dense") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file_name, text in files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    return folder


def test_public_api_is_short() -> None:
    assert sorted(repoman.config.__all__) == [
        "CONFIG_FORMATS",
        "Completer",
        "DynamicBatching",
        "InstanceGroup",
        "MAX_CONFIG_BYTES",
        "ModelConfig",
        "QueuePolicy",
        "TensorConfig",
        "VersionPolicy",
        "config_to_pbtxt",
        "config_to_yaml",
        "config_too_large",
        "find_config_file",
        "load_model_config",
        "parse_model_config",
        "read_config_text",
    ]


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({"config.pbtxt": PBTXT}, "config.pbtxt"),
        ({"config.yaml": YAML}, "config.yaml"),
        ({"config.yml": YAML}, "config.yml"),
        ({"model.onnx": ""}, None),
    ],
)
def test_find_config_file(tmp_path: Path, files: dict[str, str], found: str | None) -> None:
    folder = model_dir(tmp_path, files)
    assert find_config_file(folder) == (folder / found if found else None)


@pytest.mark.parametrize(
    "files",
    [
        {"config.pbtxt": PBTXT, "config.yaml": YAML},
        {"config.yaml": YAML, "config.yml": YAML},
    ],
)
def test_two_config_files_are_an_error(tmp_path: Path, files: dict[str, str]) -> None:
    folder = model_dir(tmp_path, files)
    with pytest.raises(ConfigError, match=r"expected one config file, found config\.\w+ and"):
        find_config_file(folder)


@pytest.mark.parametrize("files", [{"config.pbtxt": PBTXT}, {"config.yaml": YAML}])
def test_load_model_config_from_either_format(tmp_path: Path, files: dict[str, str]) -> None:
    folder = model_dir(tmp_path, files)
    config = load_model_config(folder, default_platform="onnxruntime_onnx")
    assert config.name == "dense"
    assert config.platform == "onnxruntime_onnx"
    assert config.source == folder / next(iter(files))
    assert config.as_dict() is config.normalised
    assert [t.name for t in config.inputs] == ["x"]


def test_missing_config_is_a_config_error(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, {})
    with pytest.raises(ConfigError, match=r"expected one of config\.pbtxt, .*found none"):
        load_model_config(folder)


def test_undecodable_config_is_a_config_error(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, {})
    (folder / "config.pbtxt").write_bytes(b'name: "\xff"')
    with pytest.raises(ConfigError, match=r"expected a readable UTF-8 file") as info:
        load_model_config(folder)
    assert info.value.issues[0].file == str(folder / "config.pbtxt")


def test_errors_name_the_file_of_the_folder(tmp_path: Path) -> None:
    folder = model_dir(
        tmp_path, {"config.pbtxt": PBTXT.replace("[ 4 ] } ]\noutput", "[ 0 ] } ]\noutput")}
    )
    with pytest.raises(ConfigError) as info:
        load_model_config(folder)
    [issue] = info.value.issues
    assert (issue.file, issue.line, issue.column) == (str(folder / "config.pbtxt"), 2, 50)


def test_unknown_format_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="expected 'pbtxt', 'yaml' or 'json'"):
        parse_model_config("", filename="c.toml", fmt="toml")


def test_load_model_config_refuses_a_file_over_the_size_limit(tmp_path) -> None:
    from repoman.config import MAX_CONFIG_BYTES

    (tmp_path / "config.pbtxt").write_text("#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=r"at most 1048576 bytes \(1 MiB\), found 1048577 bytes"):
        load_model_config(tmp_path)
