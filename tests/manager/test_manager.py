"""The manager carrying out the policy with real (fake-backend) instances, in process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from repoman.aspired import Aspired, AspiredVersion
from repoman.backends import BackendRegistry
from repoman.config.model import ModelConfig, TensorConfig
from repoman.errors import ModelNotFound
from repoman.manager import ModelManager, ModelVersion, State
from repoman.types import DataType
from tests import fakes


class RecordingServing:
    """Stands in for the scheduler's open/drain: records the order of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def open(self, version: ModelVersion) -> None:
        self.calls.append(("open", version.model, version.version))

    async def drain(self, version: ModelVersion) -> None:
        self.calls.append(("drain", version.model, version.version))


def registry() -> BackendRegistry:
    found = BackendRegistry()
    fakes.repoman_register_backends(found)
    return found


def config(backend: str = "echo", note: str = "") -> ModelConfig:
    tensor = (TensorConfig("INPUT", DataType.FP32, (1,)),)
    out = (TensorConfig("OUTPUT", DataType.FP32, (1,)),)
    return ModelConfig(
        name="m",
        platform="",
        backend=backend,
        max_batch_size=0,
        inputs=tensor,
        outputs=out,
        parameters={"note": note},
    )


def want(
    number: int, cfg: ModelConfig | None = None, files: str = "f", error: str = ""
) -> AspiredVersion:
    return AspiredVersion(number, cfg or config(), ((files, 1, 1),), Path("/nowhere"), error)


def run(*steps: Aspired) -> tuple[ModelManager, RecordingServing, list[tuple]]:
    serving = RecordingServing()
    states: list[tuple] = []
    manager = ModelManager(registry(), serving, on_state=lambda *s: states.append(s))

    async def go() -> None:
        for step in steps:
            await manager.apply(step)

    asyncio.run(go())
    return manager, serving, states


def test_a_new_version_is_opened_before_the_old_one_drains() -> None:
    manager, serving, states = run(
        Aspired("m", (want(1),), frozenset({1})),
        Aspired("m", (want(2),), frozenset({1, 2})),
    )
    assert serving.calls == [("open", "m", 1), ("open", "m", 2), ("drain", "m", 1)]
    assert [v.version for v in manager.versions("m")] == [2]
    assert manager.route("m").version == 2
    assert ("m", 1, "UNAVAILABLE", "") in states


def test_a_failing_new_version_leaves_the_old_one_serving_and_is_not_retried() -> None:
    broken = want(2, config("failing_load"))
    manager, serving, _ = run(
        Aspired("m", (want(1),), frozenset({1})),
        Aspired("m", (broken,), frozenset({1, 2})),
        Aspired("m", (broken,), frozenset({1, 2})),  # a rescan: the same files again
    )
    assert manager.route("m").version == 1
    (failed,) = [v for v in manager.versions("m") if v.version == 2]
    assert failed.state is State.FAILED and "broken on purpose" in failed.reason
    assert manager.load_failures == {("m", 2): 1}
    assert ("drain", "m", 1) not in serving.calls


def test_a_failed_reload_keeps_the_previous_files_serving_and_says_so() -> None:
    manager, _, _ = run(
        Aspired("m", (want(1),), frozenset({1})),
        Aspired("m", (want(1, config("failing_load")),), frozenset({1})),
    )
    (version,) = manager.versions("m")
    assert version.state is State.READY and version.config.backend == "echo"
    assert version.reason.startswith("reload failed, still serving the previous files:")


def test_a_config_edit_swaps_in_a_new_instance() -> None:
    manager, serving, _ = run(
        Aspired("m", (want(1),), frozenset({1})),
        Aspired("m", (want(1, config(note="edited")),), frozenset({1})),
    )
    assert serving.calls == [("open", "m", 1), ("open", "m", 1), ("drain", "m", 1)]
    assert manager.route("m").config.parameters == {"note": "edited"}


def test_an_error_version_fails_without_loading_and_a_model_error_is_reported() -> None:
    manager, serving, _ = run(
        Aspired("m", (want(1, error="its config is broken"),), frozenset({1})),
    )
    (version,) = manager.versions("m")
    assert version.state is State.FAILED and version.reason == "its config is broken"
    assert serving.calls == []
    manager, _, _ = run(
        Aspired("m", (want(1),), frozenset({1})),
        Aspired("m", present=frozenset({1}), error="model config broken"),
    )
    assert manager.route("m").version == 1 and manager.model_error("m") == "model config broken"


def test_unloading_forgets_the_model() -> None:
    manager, serving, _ = run(Aspired("m", (want(1),), frozenset({1})), Aspired("m"))
    assert serving.calls[-1] == ("drain", "m", 1)
    assert manager.model_names() == []
    with pytest.raises(ModelNotFound):
        manager.route("m")
