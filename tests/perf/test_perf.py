"""``repoman perf`` end to end against the real server on the bundled repository."""

from __future__ import annotations

import argparse
import csv
import json
import re
import socket
import subprocess
import sys

import pytest

import repoman.perf
from tests.conftest import ROOT

QUICK = ["--warmup", "0.2", "--timeout", "10"]  # every load here is bounded: --requests or -d


def perf(capsys, *flags: str) -> tuple[int, str, str]:
    """Parse ``flags`` as the CLI will and run them: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="repoman perf")
    repoman.perf.add_arguments(parser)
    code = repoman.perf.run(parser.parse_args([*QUICK, *flags]))
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> list[list[str]]:
    """The table's data rows, as cells."""
    return [
        line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()
    ]


def test_sweep_prints_a_row_per_level_and_writes_the_same_numbers(bundled_server, capsys, tmp_path):
    csv_file, json_file = tmp_path / "steps.csv", tmp_path / "steps.json"
    code, out, err = perf(
        capsys,
        "-m",
        "digits",
        "-u",
        bundled_server.url,
        "--concurrency",
        "1,4",
        "--requests",
        "200",
        "--csv",
        str(csv_file),
        "--json",
        str(json_file),
    )
    assert code == 0, out + err
    rows = table(out)
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "200", "0"), ("4", "200", "0")]
    assert all(float(r[3]) > 0 for r in rows)
    with csv_file.open() as f:
        from_csv = list(csv.DictReader(f))
    document = json.loads(json_file.read_text())
    assert document["model"] == "digits" and document["requests_per_step"] == 200
    steps = document["steps"]
    assert len(from_csv) == len(steps) == 2
    for row, written, step in zip(rows, from_csv, steps, strict=True):
        assert int(written["concurrency"]) == step["concurrency"] == int(row[0])
        for name in ("infer_per_sec", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms"):
            assert float(written[name]) == pytest.approx(step[name])
        assert f"{step['infer_per_sec']:.1f}" == row[3]
        assert f"{step['p50_ms']:.3f}" == row[4] and f"{step['p99_ms']:.3f}" == row[7]
        assert 0 < step["p50_ms"] <= step["p90_ms"] <= step["p95_ms"] <= step["p99_ms"]


def test_duration_mode_and_the_aiohttp_client(bundled_server, capsys):
    code, out, err = perf(
        capsys,
        "-m",
        "digits",
        "-u",
        bundled_server.address,
        "--duration",
        "0.5",
        "--client",
        "aiohttp",
        "-b",
        "4",
        "--concurrency-range",
        "2",
    )
    assert code == 0, out + err
    [row] = table(out)
    assert row[0] == "2" and int(row[1]) > 0 and row[2] == "0"
    # infer/s counts rows: batch 4 makes it four times the requests per second
    assert float(row[3]) == pytest.approx(4 * int(row[1]) / 0.5, rel=0.05)


def test_json_tensors(bundled_server, capsys):
    code, out, err = perf(
        capsys,
        "-m",
        "digits",
        "-u",
        bundled_server.address,
        "--tensor-format",
        "json",
        "--requests",
        "100",
    )
    assert code == 0, out + err
    assert "json tensors" in out and table(out)[0][2] == "0"


def test_input_data_file_in_perf_analyzer_format(bundled_server, capsys, tmp_path, heldout):
    pixels = heldout["digits"]["pixels"]
    # both of perf_analyzer's forms: a plain list, and content with its shape
    data = [{"pixels": row} for row in pixels[:10]]
    data += [{"pixels": {"content": row, "shape": [64]}} for row in pixels[10:]]
    data_file = tmp_path / "digits.json"
    data_file.write_text(json.dumps({"data": data}))
    code, out, err = perf(
        capsys,
        "-m",
        "digits",
        "-u",
        bundled_server.address,
        "--input-data",
        str(data_file),
        "-b",
        "3",
        "--concurrency",
        "2",
        "--requests",
        "100",
    )
    assert code == 0, out + err
    assert f"{len(pixels)} distinct requests" in out  # 20 rows, 3 a request: 20 bodies to cycle
    assert table(out)[0][2] == "0"


def test_unknown_model_is_a_one_line_usage_error(bundled_server, capsys):
    code, _, err = perf(capsys, "-m", "no_such_model", "-u", bundled_server.address)
    assert code == 2
    assert err.strip().count("\n") == 0 and "no_such_model" in err and "Traceback" not in err


def test_unreachable_server_is_a_usage_error(capsys):
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = perf(capsys, "-m", "digits", "-u", f"127.0.0.1:{port}", "--requests", "1")
    assert code == 2 and err.startswith("repoman perf: error: cannot reach")


def test_variable_dims_need_a_shape(bundled_server, capsys):
    code, _, err = perf(
        capsys, "-m", "digits", "-u", bundled_server.address, "--shape", "pixels:65"
    )
    assert code == 2 and "does not fit" in err


def test_rejected_requests_count_as_errors_and_exit_1(bundled_server, capsys):
    code, out, err = perf(
        capsys,
        "-m",
        "digits",
        "-u",
        bundled_server.address,
        "-b",
        "64",
        "--requests",
        "50",
    )
    assert code == 1
    [row] = table(out)
    assert row[1] == "50" and row[2] == "50" and float(row[3]) == 0
    assert "max_batch_size" in err and "Traceback" not in err


def test_processes_split_the_concurrency(bundled_server, capsys):
    code, out, err = perf(
        capsys,
        "-m",
        "digits",
        "-u",
        bundled_server.address,
        "--processes",
        "2",
        "--concurrency",
        "3",
        "--requests",
        "150",
    )
    assert code == 0, out + err
    [row] = table(out)
    assert row[:3] == ["3", "150", "0"]


def test_bad_flags_exit_2():
    parser = argparse.ArgumentParser()
    repoman.perf.add_arguments(parser)
    for flags in (
        ["--concurrency-range", "0:4"],
        ["--concurrency", "1,x"],
        ["--shape", "pixels"],
        ["--duration", "1", "--requests", "5"],
        ["--warmup", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["-m", "digits", *flags])
        assert exit_.value.code == 2


def test_the_cli_offers_perf():
    listed = subprocess.run(
        [sys.executable, "-m", "repoman", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert listed.returncode == 0, listed.stderr
    commands = re.findall(r"^    (\w+) ", listed.stdout, flags=re.M)
    assert "perf" in commands, listed.stdout
    run = subprocess.run(
        [sys.executable, "-m", "repoman", "perf", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "--concurrency-range" in run.stdout and "closed loop" in " ".join(run.stdout.split())
