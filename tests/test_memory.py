"""Sizes as people write them, the cgroup's limit, and the resident set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from repoman.memory import cgroup_limit, format_size, parse_size, resident_bytes

GIB = 1 << 30

SIZES = {
    "2GiB": 2 * GIB,
    "2 gib": 2 * GIB,
    "1.5GiB": 3 * GIB // 2,
    "512MB": 512 * 10**6,
    "512MiB": 512 << 20,
    "100k": 100_000,
    "1073741824": GIB,
    "0.5": 8 * GIB,  # of the 16 GiB the test says the machine has
    ".25": 4 * GIB,
}


@pytest.mark.parametrize("text, expected", SIZES.items(), ids=SIZES.keys())
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text, 16 * GIB) == expected


@pytest.mark.parametrize("text", ["", "lots", "2 GiBs", "-1GiB", "0", "1.5", "2GiB of it"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_size(text, 16 * GIB)


def test_a_fraction_needs_the_machine_s_memory() -> None:
    with pytest.raises(ValueError, match="is a fraction"):
        parse_size("0.5")


def test_format_size() -> None:
    assert [format_size(n) for n in (12, 2048, 3 << 20, GIB + GIB // 2)] == [
        "12 B",
        "2.0 KiB",
        "3.0 MiB",
        "1.5 GiB",
    ]


def test_the_tightest_cgroup_limit_up_the_tree_counts(tmp_path: Path) -> None:
    relative = Path("/proc/self/cgroup").read_text().splitlines()
    path = next((line[3:] for line in relative if line.startswith("0::")), None)
    if path is None:
        pytest.skip("this machine has no cgroup v2 hierarchy")
    root = tmp_path / "cgroup"
    own = root / path.lstrip("/")
    own.mkdir(parents=True)
    assert cgroup_limit(root) is None  # NOTE: no memory.max anywhere: no limit
    (own / "memory.max").write_text("max\n")
    assert cgroup_limit(root) is None
    (root / "memory.max").write_text(f"{4 * GIB}\n")
    assert cgroup_limit(root) == 4 * GIB
    (own / "memory.max").write_text(f"{GIB}\n")
    assert cgroup_limit(root) == GIB


def test_the_resident_set_grows_with_touched_pages() -> None:
    before = resident_bytes()
    ballast = np.ones(64 << 20, dtype=np.uint8)
    grown = resident_bytes() - before
    assert 60 << 20 <= grown <= 80 << 20
    del ballast
    assert resident_bytes(pid=2**22 + 1) == 0  # NOTE: no such process
