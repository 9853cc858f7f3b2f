"""Shared fixtures for the config tests: a fixed GPU count and a helper that collects issues."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from repoman.config import parse_model_config, triton_rules
from repoman.errors import ConfigError, ConfigIssue

IssuesOf = Callable[..., list[ConfigIssue]]


@pytest.fixture(autouse=True)
def gpu_count(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Tests see no GPU unless they ask for some: results must not depend on the machine."""

    def set_count(count: int) -> None:
        monkeypatch.setattr(triton_rules, "visible_gpu_count", lambda: count)

    set_count(0)
    return set_count


@pytest.fixture
def issues_of() -> IssuesOf:
    """``issues_of(text, fmt="pbtxt", model_name="m")``: the issues a config must raise."""

    def run(text: str, fmt: str = "pbtxt", model_name: str | None = "m") -> list[ConfigIssue]:
        with pytest.raises(ConfigError) as info:
            parse_model_config(text, filename=f"config.{fmt}", fmt=fmt, model_name=model_name)
        return info.value.issues

    return run
