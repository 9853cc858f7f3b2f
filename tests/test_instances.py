"""Building and loading a version's instances; a config disagreeing with its model file is
refused before any instance loads, with both sides shown."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from repoman.config import parse_model_config
from repoman.errors import RepomanError
from repoman.instances import instance_contexts, load_instances, warm_up
from repoman.plugins import build_backend_registry, make_plugin_manager
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model
from tests.conftest import BUNDLED
from tests.fakes import EchoBackend

CONFIG = (BUNDLED / "digits" / "config.pbtxt").read_text()


def load(text: str) -> list:
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="digits")
    pm, report = make_plugin_manager()
    spec = build_backend_registry(pm, report).resolve(config)
    contexts = instance_contexts(config, 1, BUNDLED / "digits" / "1", spec.default_model_filename)
    instances = [spec.factory(context) for context in contexts]
    load_instances(instances)
    return instances


def test_the_bundled_config_matches_its_model():
    assert len(load(CONFIG)) == 1


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('name: "pixels"', 'name: "image"'), ["input[0].name", "(pixels)", "'image'"]),
        (
            ("data_type: TYPE_INT64", "data_type: TYPE_INT32"),
            ["output[1].data_type", "TYPE_INT64", "TYPE_INT32"],
        ),
        (("dims: [ 64 ]", "dims: [ 8, 8 ]"), ["input[0].dims", "[64]", "[8, 8]"]),
    ],
    ids=["name", "datatype", "dims"],
)
def test_a_config_disagreeing_with_the_model_is_refused_before_loading(tmp_path, edit, words):
    folder = tmp_path / "digits"
    shutil.copytree(BUNDLED / "digits", folder)
    (folder / "config.pbtxt").write_text(CONFIG.replace(*edit))
    pm, report = make_plugin_manager()
    resolver = Resolver(build_backend_registry(pm, report))
    (version,) = resolver.resolve(read_model(folder, ScanOptions(), now=0.0)).aspired().versions
    for word in words:
        assert word in version.error


def test_instance_groups_give_one_context_each():
    text = CONFIG.replace("count: 1", "count: 3")
    config = parse_model_config(text, filename="config.pbtxt", fmt="pbtxt", model_name="digits")
    contexts = instance_contexts(config, 1, Path("/m/1"), "model.onnx")
    assert [c.instance_name for c in contexts] == ["digits_0_0", "digits_0_1", "digits_0_2"]
    assert {c.model_path for c in contexts} == {Path("/m/1/model.onnx")}


# ---- files a config names stay inside their folder ------------------------------------

WARMUP = (
    'model_warmup [ { name: "w" batch_size: 1 inputs { key: "pixels" value { '
    'data_type: TYPE_FP32 dims: [ 64 ] input_data_file: "pixels.bin" } } } ]\n'
)


@pytest.mark.parametrize("filename", ["/etc/passwd", "../../other/1/model.onnx"])
def test_a_model_path_outside_the_version_folder_is_refused_where_it_is_built(filename):
    # NOTE: config validation refuses these names already; this is the second line, for a
    # config that did not pass through it.
    config = parse_model_config(CONFIG, filename="config.pbtxt", fmt="pbtxt", model_name="digits")
    with pytest.raises(RepomanError, match=r"default_model_filename .* refused"):
        instance_contexts(config, 1, Path("/m/1"), filename)


def test_a_model_file_that_is_a_symlink_out_of_the_version_folder_is_refused(tmp_path):
    version = tmp_path / "digits" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").symlink_to(BUNDLED / "digits" / "1" / "model.onnx")
    config = parse_model_config(CONFIG, filename="config.pbtxt", fmt="pbtxt", model_name="digits")
    with pytest.raises(RepomanError, match=r"'model\.onnx' leads out of"):
        instance_contexts(config, 1, version, "model.onnx")


def test_a_warmup_file_that_is_a_symlink_out_of_warmup_is_refused(tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(BUNDLED / "digits", folder)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(64, dtype="<f4").tobytes())
    (folder / "warmup").mkdir()
    (folder / "warmup" / "pixels.bin").symlink_to(secret)
    config = parse_model_config(
        CONFIG + WARMUP, filename="config.pbtxt", fmt="pbtxt", model_name="digits"
    )
    contexts = instance_contexts(config, 1, folder / "1", "model.onnx")
    pm, report = make_plugin_manager()
    spec = build_backend_registry(pm, report).resolve(config)
    with pytest.raises(RepomanError, match=r"input_data_file 'pixels\.bin' leads out of"):
        load_instances([spec.factory(context) for context in contexts])
    (folder / "warmup" / "pixels.bin").unlink()
    shutil.copy(secret, folder / "warmup" / "pixels.bin")
    load_instances([spec.factory(context) for context in contexts])  # a real file is read


# ---- warm-up samples are bounded where they are built ----------------------------------


def warmup_config(sample: dict, max_batch_size: int = 4):
    config = parse_model_config(CONFIG, filename="config.pbtxt", fmt="pbtxt", model_name="digits")
    return dataclasses.replace(config, max_batch_size=max_batch_size, model_warmup=(sample,))


def warm_up_one(config, version_path: Path = BUNDLED / "digits" / "1") -> None:
    context = instance_contexts(config, 1, version_path, "")[0]
    warm_up(EchoBackend(context))


@pytest.mark.parametrize(
    ("sample", "words"),
    [
        (
            {
                "name": "big",
                "batch_size": 1,
                "inputs": {
                    "pixels": {"data_type": "TYPE_FP32", "dims": [1 << 30], "zero_data": True}
                },
            },
            "warm-up sample 'big': expected at most 67108864 bytes (64 MiB), found 4294967296",
        ),
        (
            {
                "name": "rows",
                "batch_size": 1 << 20,
                "inputs": {"pixels": {"data_type": "TYPE_FP32", "dims": [64], "zero_data": True}},
            },
            "warm-up sample 'rows': expected a batch_size from 1 to 4, found 1048576",
        ),
    ],
    ids=["bytes", "batch_size"],
)
def test_a_warmup_sample_over_the_limits_is_refused_before_allocating(sample, words):
    # NOTE: built around config validation (which refuses these), as a second line.
    with pytest.raises(RepomanError, match=re.escape(words)):
        warm_up_one(warmup_config(sample))


def test_a_warmup_file_of_the_wrong_size_is_refused_unread(tmp_path):
    folder = tmp_path / "digits"
    (folder / "1").mkdir(parents=True)
    (folder / "warmup").mkdir()
    with (folder / "warmup" / "pixels.bin").open("wb") as handle:
        handle.truncate(1 << 30)  # sparse
    sample = {
        "name": "file",
        "batch_size": 1,
        "inputs": {
            "pixels": {"data_type": "TYPE_FP32", "dims": [64], "input_data_file": "pixels.bin"}
        },
    }
    with pytest.raises(
        RepomanError, match=r"expected 256 bytes \(64 x TYPE_FP32\), found 1073741824"
    ):
        warm_up_one(warmup_config(sample), folder / "1")


def test_a_warmup_folder_that_is_a_symlink_out_of_the_model_is_refused(tmp_path):
    folder = tmp_path / "repo" / "digits"
    shutil.copytree(BUNDLED / "digits", folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pixels.bin").write_bytes(np.ones(64, dtype="<f4").tobytes())
    (folder / "warmup").symlink_to(outside)
    config = parse_model_config(
        CONFIG + WARMUP, filename="config.pbtxt", fmt="pbtxt", model_name="digits"
    )
    with pytest.raises(RepomanError, match=r"warm-up folder 'warmup' leads out of"):
        warm_up_one(config, folder / "1")
