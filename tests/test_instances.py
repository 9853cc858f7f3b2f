"""Building and loading a version's instances; a config disagreeing with its model file is
refused before any instance loads, with both sides shown."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from repoman.config import parse_model_config
from repoman.instances import instance_contexts, load_instances
from repoman.plugins import build_backend_registry, make_plugin_manager
from repoman.source.resolve import Resolver
from repoman.source.scan import ScanOptions, read_model
from tests.conftest import BUNDLED

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
        (("data_type: TYPE_INT64", "data_type: TYPE_INT32"), ["output[1].data_type", "TYPE_INT64", "TYPE_INT32"]),
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
