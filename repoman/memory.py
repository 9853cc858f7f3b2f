"""Memory figures from the operating system: sizes as people write them, the machine's (or the
cgroup's) memory, a process's resident set, and handing freed heap pages back (Linux; stdlib)."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
from functools import cache
from pathlib import Path

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*$", re.ASCII)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_size(text: str, total: int | None = None) -> int:
    """Bytes from ``2GiB``, ``512 MB`` or a plain number of bytes (``1073741824``); a number
    below 1 with no unit is a fraction of ``total`` (``0.5``: half of it).

    Raises ValueError saying what was expected.
    """
    match = _SIZE.match(text.lower())
    if match is None or match[2] not in _UNITS:
        raise ValueError(
            f"expected a size such as 2GiB, 512MB or 1073741824, or a fraction such as 0.5, "
            f"found {text!r}"
        )
    number = float(match[1])
    if not match[2] and 0 < number < 1:
        if total is None:
            raise ValueError(f"{text!r} is a fraction, and the machine's memory is not known")
        return int(total * number)
    size = number * _UNITS[match[2]]
    if not 0 < size < math.inf or (not match[2] and number != int(number)):
        raise ValueError(f"expected a positive whole number of bytes, found {text!r}")
    return int(size)


def format_size(size: float) -> str:
    """``1.5 GiB``, ``300.0 MiB``, ``12 B``: for logs and reasons."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def machine_memory(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The memory this process may use: its cgroup v2 ``memory.max`` where one is set (a
    container's limit), else the machine's physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_limit(cgroup_root)
    return min(physical, limit) if limit is not None else physical


def cgroup_limit(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """This process's cgroup v2 ``memory.max`` (the tightest one up its tree), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    found: int | None = None
    folder = cgroup_root / relative.lstrip("/")
    while True:
        try:
            text = (folder / "memory.max").read_text().strip()
        except OSError:
            text = "max"
        if text != "max" and text.isdigit():
            found = int(text) if found is None else min(found, int(text))
        if folder == cgroup_root or cgroup_root not in folder.parents:
            return found
        folder = folder.parent


_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes(pid: int | None = None) -> int:
    """The resident set of a process (this one by default), from ``/proc/<pid>/statm``; 0 when
    it cannot be read (the process is gone)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None  # NOTE: not glibc (musl has none): nothing to do
    return libc


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``), so a version
    just unloaded stops counting in the resident set and the next load is measured alone."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def fix_mmap_threshold(size: int = 1 << 20) -> None:
    """Allocations of ``size`` bytes or more get pages of their own, returned when freed.

    NOTE: glibc raises its threshold after each large free, so a model's buffers loaded after
    another was unloaded land in the heap, where freeing them later may not lower the
    resident set; setting it once turns that adjustment off (``M_MMAP_THRESHOLD`` is -3).
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, size)
