"""Does `repoman tune` pay off? Tune each model, then re-measure independently with `repoman perf`.

For each model: run `repoman tune` on a copy of it (its time budget checked against the wall
clock), then serve three copies side by side in one fresh `repoman serve` -- the model's own
config ("untuned"), the same with dynamic batching removed ("off") and the recommended config
("tuned") -- and drive each with `repoman perf` at the tuning concurrencies, rounds interleaved
(untuned, off, tuned, untuned, ...) so drift on this shared machine hits all three alike. Prints
a table and the tuned/off and tuned/untuned throughput ratios with the p99 budget verdicts.
Not a timed test: a script that prints numbers.

Usage: .venv/bin/python bench/tune_check.py [--models digits iris heavy] [--time-budget S]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

from repoman.config import config_to_pbtxt, find_config_file, load_model_config  # noqa: E402
from repoman.tune.space import settings_of  # noqa: E402
from tests.serverproc import start_server  # noqa: E402

KINDS = ("untuned", "off", "tuned")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def source_of(model: str, generated: Path) -> Path:
    if (ROOT / "model_repository" / model).is_dir():
        return ROOT / "model_repository" / model
    if not (generated / model).is_dir():
        log(f"generating the benchmark models into {generated}")
        subprocess.run(
            [sys.executable, str(BENCH / "make_models.py"), str(generated), "--no-measure"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return generated / model


def renamed(text: str, old: str, new: str) -> str:
    """The config text with its ``name`` field changed (pbtxt or YAML, quoted or not)."""
    return re.sub(
        rf'^name:\s*"?{re.escape(old)}"?\s*$', f'name: "{new}"', text, count=1, flags=re.M
    )


def add_copy(repo: Path, source: Path, name: str, config_name: str, text: str) -> None:
    target = repo / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("config.*"))
    (target / config_name).write_text(renamed(text, source.name, name))


def perf(url: str, model: str, levels: list[int], seconds: float, out: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "repoman", "perf", "-m", model, "-u", url]
    cmd += ["--concurrency", ",".join(map(str, levels)), "--duration", str(seconds)]
    cmd += ["--warmup", "0.5", "--no-progress", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        log(f"  repoman perf {model} failed (exit {run.returncode}): {run.stderr.strip()[-400:]}")
    return json.loads(out.read_text())["steps"] if out.exists() else []


def check(model: str, args: argparse.Namespace, work: Path) -> list[dict]:
    source = source_of(model, work / "generated")
    tune_repo = work / f"tune-{model}"
    tune_repo.mkdir()
    shutil.copytree(source, tune_repo / model)
    levels = args.concurrency
    log(f"{model}: repoman tune, budget {args.time_budget:g} s, p99 budget {args.budget_ms:g} ms")
    started = time.monotonic()
    tuned_file = work / f"{model}.tuned"
    command = [sys.executable, "-m", "repoman", "tune", model, "--repo", str(tune_repo)]
    command += ["--time-budget", str(args.time_budget), "--latency-budget-ms", str(args.budget_ms)]
    command += ["--concurrency", ",".join(map(str, levels)), "--no-progress"]
    command += ["--output", str(tuned_file), "--plot", str(work / f"{model}.svg")]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=args.time_budget * 3 + 120,
    )
    took = time.monotonic() - started
    if run.returncode != 0:
        log(f"  tune failed (exit {run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
        return []
    recommended = next(line for line in run.stdout.splitlines() if line.startswith("recommended:"))
    log(f"  tune took {took:.0f} s; {recommended}")

    original_path = find_config_file(source)
    original = original_path.read_text() if original_path else ""
    config = load_model_config(source) if original_path else None
    if config is None:
        log("  the model has no config file to compare against: skipped")
        return []
    off_settings = settings_of(config.as_dict())
    off_settings = type(off_settings)(off_settings.max_batch_size, False, 0, (), 1)
    off_text = config_to_pbtxt(off_settings.apply(config.as_dict()))
    serve_repo = work / f"serve-{model}"
    serve_repo.mkdir()
    add_copy(serve_repo, source, f"{model}_untuned", original_path.name, original)
    add_copy(serve_repo, source, f"{model}_off", "config.pbtxt", off_text)
    add_copy(serve_repo, source, f"{model}_tuned", original_path.name, tuned_file.read_text())
    server = start_server(serve_repo, "--model-control-mode", "none")
    samples: dict[str, list[list[dict]]] = {kind: [] for kind in KINDS}
    try:
        for round_number in range(args.rounds):
            for kind in KINDS:
                log(f"  round {round_number + 1}/{args.rounds}: repoman perf {model}_{kind}")
                out = work / f"{model}-{kind}-{round_number}.json"
                samples[kind].append(perf(server.url, f"{model}_{kind}", levels, args.seconds, out))
    finally:
        server.stop()
    rows = []
    for kind in KINDS:
        for k, level in enumerate(levels):
            steps = [s[k] for s in samples[kind] if len(s) > k]
            if not steps:
                continue
            rows.append(
                {
                    "model": model,
                    "config": kind,
                    "concurrency": level,
                    "infer_s": statistics.median(s["infer_per_sec"] for s in steps),
                    "p99_ms": statistics.median(s["p99_ms"] for s in steps),
                    "errors": sum(s["errors"] for s in steps),
                    "tune_s": took,
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["digits", "iris", "heavy"])
    parser.add_argument("--time-budget", type=float, default=60.0)
    parser.add_argument("--budget-ms", type=float, default=50.0, help="p99 latency budget")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="perf window per step")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="repoman-tune-check-") as tmp:
        for model in args.models:
            rows += check(model, args, Path(tmp))
    print(
        f"\nrepoman perf, {args.rounds} interleaved rounds of {args.seconds:g} s per step "
        f"(medians); p99 budget {args.budget_ms:g} ms"
    )
    print(f"{'model':<8} {'config':<8} {'conc':>5} {'infer/s':>9} {'p99 ms':>8} {'errors':>7}")
    for r in rows:
        print(
            f"{r['model']:<8} {r['config']:<8} {r['concurrency']:>5} {r['infer_s']:>9.0f} "
            f"{r['p99_ms']:>8.2f} {r['errors']:>7}"
        )
    print()
    for model in args.models:
        got = {(r["config"], r["concurrency"]): r for r in rows if r["model"] == model}
        tuned_took = next((r["tune_s"] for r in rows if r["model"] == model), None)
        if tuned_took is None:
            print(f"{model}: no result")
            continue
        within_time = tuned_took <= args.time_budget
        print(
            f"{model}: tune took {tuned_took:.0f} s of a {args.time_budget:g} s budget "
            f"({'within' if within_time else 'OVER'})"
        )
        for level in args.concurrency:
            tuned = got.get(("tuned", level))
            if tuned is None:
                continue
            verdict = "within" if tuned["p99_ms"] <= args.budget_ms else "OVER"
            ratios = ", ".join(
                f"{tuned['infer_s'] / got[(kind, level)]['infer_s']:.2f}x {kind}"
                for kind in ("off", "untuned")
                if got.get((kind, level)) and got[(kind, level)]["infer_s"]
            )
            p99 = tuned["p99_ms"]
            print(f"  c{level}: tuned = {ratios}; tuned p99 {p99:.1f} ms {verdict} budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
