"""The command line's arguments: what --help shows, and what it must never show."""

from __future__ import annotations

import pytest

from repoman.cli.parser import build_parser

SECRET = "s3cret-from-the-environment"


@pytest.mark.parametrize("command", ["serve", "tune"])
def test_help_never_shows_the_control_token_from_the_environment(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REPOMAN_CONTROL_TOKEN", SECRET)
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    shown = capsys.readouterr().out
    assert "--control-token" in shown and "REPOMAN_CONTROL_TOKEN" in shown
    assert SECRET not in shown


@pytest.mark.parametrize("command", [["serve"], ["tune", "digits"]])
def test_the_parsed_arguments_do_not_hold_the_token_from_the_environment(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # NOTE: the environment is read where the token is used, so it never sits in defaults
    # (which --help and error messages print).
    monkeypatch.setenv("REPOMAN_CONTROL_TOKEN", SECRET)
    assert build_parser().parse_args(command).control_token is None
    assert build_parser().parse_args([*command, "--control-token", "t"]).control_token == "t"


def test_version_is_written_in_one_place_and_shown_by_repoman_version() -> None:
    import subprocess
    import sys
    import tomllib

    import repoman
    from tests.serverproc import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "repoman.__version__"}
    shown = subprocess.run(
        [sys.executable, "-m", "repoman", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert shown == f"repoman {repoman.__version__}\n"
