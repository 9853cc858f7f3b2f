"""A backend that breaks its contract (``execute`` returns something other than one result per
request): every request of the batch is answered with a 500 that says what came back, at
once, never left waiting; the server serves on. Over HTTP, a third-party plugin's way in."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.test_faults import post
from tests.fakes import write_model
from tests.serverproc import ROOT, ServerProcess, start_server

WRONG = {
    "none": "returned NoneType, not a sequence of one result per request",
    "int": "returned int, not a sequence of one result per request",
    "dict": "returned dict, not a sequence of one result per request",
    "generator": "returned generator, not a sequence of one result per request",
    "strings": "returned str for request 0 of its batch, not a mapping of output names",
    "unreadable": "returned a _Unreadable that could not be read: RuntimeError: no length today",
}


def returning(returns: str, batching: bool) -> str:
    extra = f'parameters {{ key: "returns" value: {{ string_value: "{returns}" }} }}\n'
    if batching:
        extra += "dynamic_batching { max_queue_delay_microseconds: 200000 }\n"
    return extra


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("contract")
    (root / "plugins").mkdir()
    shutil.copy(ROOT / "tests" / "fakes.py", root / "plugins" / "fakes.py")
    for returns in [*WRONG, "one_short", "fine"]:
        for batching in (False, True):
            name = f"{returns}_{'batched' if batching else 'solo'}"
            extra = returning(returns, batching)
            write_model(root / "repo", name, backend="contract_breaking", extra=extra)
    started = start_server(root / "repo", "--plugins-dir", str(root / "plugins"))
    yield started
    assert started.stop() == 0, started.log()[-4000:]


@pytest.mark.parametrize("batching", ["solo", "batched"])
@pytest.mark.parametrize("returns", list(WRONG))
def test_a_result_that_breaks_the_contract_is_a_500_naming_it(server, returns, batching):
    status, answer, took = post(server, f"/v2/models/{returns}_{batching}/infer", timeout=30)
    assert status == 500, answer
    assert f"backend of model '{returns}_{batching}' version 1 {WRONG[returns]}" in answer["error"]
    assert took < 20  # answered, not left to the client's timeout


@pytest.mark.parametrize("returns", [*WRONG, "one_short"])
def test_every_request_of_a_batch_broken_whole_is_answered(server, returns):
    # Three requests in one batch (the 200 ms queue delay gathers them): each gets its 500.
    with ThreadPoolExecutor(3) as pool:
        answers = list(
            pool.map(lambda _: post(server, f"/v2/models/{returns}_batched/infer"), range(3))
        )
    assert [status for status, _, _ in answers] == [500] * 3, answers
    for _, answer, _ in answers:
        assert f"'{returns}_batched' version 1 returned" in answer["error"]
    # and the server serves on: the same backend, keeping its contract, answers
    status, answer, _ = post(server, "/v2/models/fine_batched/infer")
    assert status == 200 and answer["outputs"][0]["data"] == [1, 2, 3, 4], json.dumps(answer)
