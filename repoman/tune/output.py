"""Writing the recommended config: the model's own format, its header comments kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from repoman.config import config_to_pbtxt, config_to_yaml, find_config_file
from repoman.tune.space import Settings


def config_path(model_dir: Path) -> Path:
    """Where the model's config lives (config.pbtxt when it has none: auto-completed)."""
    return find_config_file(model_dir) or model_dir / "config.pbtxt"


def render(config: dict[str, Any], path: Path, note: list[str]) -> str:
    """``config`` as the text of ``path``'s format (YAML for .yaml/.yml, else pbtxt).

    The comment lines at the top of the existing file are kept, then ``note`` as comments:
    fields are rewritten in their normalised form, so comments between fields are not kept.
    """
    header = _leading_comments(path)
    body = config_to_yaml(config) if path.suffix in (".yaml", ".yml") else config_to_pbtxt(config)
    lines = header + [f"# {line}" if line else "#" for line in note]
    return "\n".join(lines) + "\n\n" + body


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step: a watcher never sees a half-written config.

    The temporary file is hidden (a leading dot), so the repository watcher ignores it.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def changes(before: Settings, after: Settings) -> list[str]:
    """``field: old -> new`` for each tuned field that differs."""
    pairs = [
        ("max_batch_size", before.max_batch_size, after.max_batch_size),
        ("dynamic_batching", _on(before.batching), _on(after.batching)),
        (
            "dynamic_batching.max_queue_delay_microseconds",
            before.delay_us if before.batching else "-",
            after.delay_us if after.batching else "-",
        ),
        (
            "dynamic_batching.preferred_batch_size",
            list(before.preferred) or "-",
            list(after.preferred) or "-",
        ),
        ("instance_group.count", before.instances, after.instances),
    ]
    return [f"{name}: {old} -> {new}" for name, old, new in pairs if old != new]


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _leading_comments(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        if line.startswith("# tuned by repoman tune"):
            break  # an earlier tuning note: replaced by this one
        header.append(line)
    return header + ([""] if header else [])
