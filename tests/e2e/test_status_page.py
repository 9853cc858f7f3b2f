"""The status page in a real browser (headless Chromium over the DevTools protocol): models
appear, a new version goes loading -> ready without a reload, a broken config shows why, live
numbers move under load, it fits a phone, and the token gates what it shows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from tests.cdp import Browser, find_chromium
from tests.conftest import BUNDLED, ROOT
from tests.e2e.test_memory_budget import ballast, index, infer
from tests.fakes import write_model

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium; "
    "`make test` installs it where it can; REPOMAN_CHROMIUM names another binary)",
)

DOCS = ROOT / "docs"
NONE = "\N{EN DASH}"
"""What a number cell shows while there is nothing to show."""
UPDATE_SCREENSHOTS = os.environ.get("REPOMAN_UPDATE_SCREENSHOTS") == "1"
"""Set to 1 to write the README's screenshots (docs/status-*.png) from these tests."""


def keep_screenshot(made: Path, name: str) -> None:
    if UPDATE_SCREENSHOTS:
        shutil.copy(made, DOCS / name)


def cell(model: str, version: int, field: str) -> str:
    return (
        f'document.querySelector(\'section[data-model="{model}"] '
        f'tr[data-version="{version}"] [data-field="{field}"]\')?.textContent'
    )


def infer_forever(server, model: str, body: dict, stop: threading.Event, threads: int = 4):
    data = json.dumps(body).encode()

    def loop() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"{server.url}/v2/models/{model}/infer",
                data=data,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def test_a_new_version_shows_loading_then_ready_without_a_reload(
    tmp_path, server_factory, plugins_dir
):
    repo = tmp_path / "repo"
    write_model(
        repo, "echo", extra='parameters { key: "load_delay_ms" value: { string_value: "2500" } }\n'
    )
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--quiet-period", "0.2")

    async def scenario() -> list[str]:
        async with Browser() as page:
            await page.goto(server.url + "/")
            await page.wait_for(cell("echo", 1, "state") + "?.startsWith('READY')")
            await page.evaluate("window.sameDocument = true")
            (repo / "echo" / "2").mkdir()
            (repo / "echo" / "2" / "model.txt").write_text("fake")
            seen: list[str] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = await page.evaluate(cell("echo", 2, "state"))
                if state and (not seen or seen[-1] != state):
                    seen.append(state)
                if state and state.startswith("READY"):
                    break
                await asyncio.sleep(0.1)
            assert await page.evaluate("window.sameDocument") is True  # never reloaded
            serving = await page.evaluate(
                "document.querySelector('section[data-model=\"echo\"] [data-field=serving]')"
                "?.textContent"
            )
            assert serving == "2", seen
            return seen

    seen = asyncio.run(scenario())
    assert seen[0] == "LOADING" and seen[-1] == "READY · serving", seen


def test_a_broken_config_shows_its_reason(tmp_path, server_factory, plugins_dir):
    repo = tmp_path / "repo"
    write_model(repo, "echo")
    write_model(repo, "broken", backend="failing_load")
    (repo / "typo").mkdir()
    (repo / "typo" / "config.pbtxt").write_text(
        'name: "typo"\nbackend: "echo"\nmax_batch_size: "eight"\n'
    )
    (repo / "typo" / "1").mkdir()
    (repo / "echo" / "latest").mkdir()
    server = server_factory(repo, "--plugins-dir", str(plugins_dir))

    async def scenario() -> None:
        async with Browser(1100, 900) as page:
            await page.goto(server.url + "/")
            text = await page.wait_for(
                "document.querySelector('section[data-model=\"typo\"] .error')?.innerText"
            )
            assert "typo/config.pbtxt:3" in text and "max_batch_size" in text
            broken = await page.wait_for(
                "document.querySelector('section[data-model=\"broken\"] tr.reason')?.innerText"
            )
            assert "broken on purpose" in broken
            assert await page.evaluate(cell("broken", 1, "state")) == "FAILED"
            ignored = await page.wait_for("document.querySelector('#ignored')?.innerText")
            assert "echo/latest: not a version folder" in ignored
            shot = tmp_path / "status-failure.png"
            await page.screenshot(shot)
            keep_screenshot(shot, "status-failure.png")
            assert not [line for line in page.console if line.startswith("exception")]

    asyncio.run(scenario())


def test_live_numbers_move_under_load_without_moving_the_layout(tmp_path, server_factory):
    repo = tmp_path / "repo"
    for name in ("digits", "iris", "iris_preprocess", "iris_species", "iris_postprocess"):
        shutil.copytree(BUNDLED / name, repo / name)
    server = server_factory(repo)
    body = {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]
    }

    async def scenario() -> None:
        async with Browser(1100, 900) as page:
            await page.goto(server.url + "/")
            await page.wait_for(cell("digits", 1, "state") + "?.startsWith('READY')")
            await page.evaluate(
                "document.querySelector('section[data-model=\"digits\"] details').open = true"
            )
            await asyncio.sleep(0.2)
            height = (
                "document.querySelector('section[data-model=\"digits\"]')"
                ".getBoundingClientRect().height"
            )
            before = await page.evaluate(height)
            stop = threading.Event()
            workers = infer_forever(server, "digits", body, stop)
            try:
                rate = await page.wait_for(
                    f"(() => {{ const r = parseFloat({cell('digits', 1, 'rate')}); "
                    "return r > 0 ? r : 0; })()"
                )
                assert rate > 0
                assert await page.wait_for(f"{cell('digits', 1, 'p50')} !== '{NONE}'")
                assert await page.evaluate(f"{cell('digits', 1, 'p99')}") != NONE
                assert await page.evaluate(f"{cell('digits', 1, 'batch')}") != NONE
                bars = await page.evaluate(
                    '[...document.querySelectorAll(\'section[data-model="digits"] '
                    "[data-chart=batch_sizes] .bars span')].map(b => parseFloat(b.style.height))"
                )
                assert max(bars) == 100.0
                during = await page.evaluate(height)
                assert during == before  # numbers changed; nothing moved
                shot = tmp_path / "status-healthy.png"
                await page.screenshot(shot)
                keep_screenshot(shot, "status-healthy.png")
            finally:
                stop.set()
                for worker in workers:
                    worker.join(15)
            # A phone: nothing wider than the screen (wide tables scroll in their own box).
            await page.resize(375, 800, mobile=True)
            await asyncio.sleep(0.3)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375
            # Landmarks and table headers, for screen readers.
            assert await page.evaluate(
                "!!document.querySelector('header') && !!document.querySelector('main') "
                "&& document.querySelectorAll('table.versions th[scope=col]').length >= 10"
            )
            assert not [line for line in page.console if line.startswith("exception")]

    asyncio.run(scenario())


def test_memory_shows_each_version_and_the_total_against_the_budget(
    tmp_path, server_factory, plugins_dir
):
    repo = tmp_path / "repo"
    for name in ("a", "b", "c", "untouched"):
        ballast(repo, name, 16)
    server = server_factory(repo, "--plugins-dir", str(plugins_dir), "--memory-budget", "44MiB")
    # NOTE: two 16 MiB models fit (with what a load takes beyond its ballast); three do not
    with httpclient.InferenceServerClient(server.address) as client:
        for name in ("a", "b", "c"):
            infer(client, name)
    # NOTE: a or b went (equally recent; a longer load is kept longer): the page shows which
    gone = [name for name in ("a", "b") if index(server)[f"{name}/1"]["state"] == "AVAILABLE"]
    assert len(gone) == 1, gone

    async def scenario() -> None:
        async with Browser(1100, 900) as page:
            await page.goto(server.url + "/")
            summary = await page.wait_for(
                "document.querySelector('#memory [data-field=summary]')?.textContent"
                ".includes('budget') && "
                "document.querySelector('#memory [data-field=summary]').textContent"
            )
            assert "of the 44.0 MiB budget" in summary, summary
            assert "2 versions in memory, 2 available" in summary, summary
            assert await page.evaluate("!document.getElementById('memory-meter').hidden")
            evictions = "document.querySelector('#memory [data-field=\"evictions.memory_budget\"]')"
            assert await page.evaluate(evictions + ".textContent") == "1"
            lazy = "document.querySelector('#memory [data-field=\"loads.lazy\"]')"
            assert await page.evaluate(lazy + ".textContent") == "3"
            assert await page.evaluate(cell(gone[0], 1, "state")) == "AVAILABLE · serving"
            # NOTE: measured (also once evicted: at its load), or predicted (≈)
            assert re.fullmatch(r"1[67]\.\d MiB", await page.evaluate(cell(gone[0], 1, "memory")))
            assert re.fullmatch(r"1[67]\.\d MiB", await page.evaluate(cell("c", 1, "memory")))
            assert (
                await page.evaluate(cell("untouched", 1, "memory")) == "\N{ALMOST EQUAL TO}16.0 MiB"
            )
            note = await page.evaluate(
                f"document.querySelector('section[data-model=\"{gone[0]}\"] tr.reason .note')"
                "?.textContent"
            )
            assert note == "unloaded: memory budget"
            shot = tmp_path / "status-memory.png"
            await page.screenshot(shot)
            keep_screenshot(shot, "status-memory.png")
            assert not [line for line in page.console if line.startswith("exception")]

    asyncio.run(scenario())


def test_the_token_gates_what_the_page_shows(tmp_path, server_factory):
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED / "digits", repo / "digits")
    server = server_factory(
        repo,
        "--control-token",
        "s3cret",
        "--protect-inference",
        "--model-control-mode",
        "explicit",
        "--load-model",
        "digits",
    )

    async def scenario() -> None:
        async with Browser() as page:
            await page.goto(server.url + "/")
            said = await page.wait_for(
                "document.getElementById('connection').textContent.includes('token') && "
                "document.getElementById('connection').textContent"
            )
            assert "needs a token" in said
            assert (
                await page.evaluate("document.querySelectorAll('section[data-model]').length") == 0
            )
            assert await page.evaluate("document.querySelectorAll('.actions button').length") == 0
            await page.evaluate(
                "document.getElementById('token').value = 's3cret';"
                "document.getElementById('token-form').requestSubmit()"
            )
            await page.wait_for(cell("digits", 1, "state") + "?.startsWith('READY')")
            # The control token: the load/unload buttons, and what the watcher saw.
            assert await page.wait_for("document.querySelectorAll('.actions button').length") == 2
            assert "Explicit mode" in await page.evaluate(
                "document.getElementById('repository-body').innerText"
            )
            await page.evaluate(
                "[...document.querySelectorAll('.actions button')]"
                ".find(b => b.textContent.startsWith('Unload')).click()"
            )
            await page.wait_for(
                "!document.querySelector('section[data-model=\"digits\"] tr[data-version]') || "
                + cell("digits", 1, "state")
                + "?.startsWith('UNAVAILABLE')"
            )

    asyncio.run(scenario())
