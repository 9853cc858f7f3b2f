"""What an ensemble costs the core, measured in one process (issue #16); prints a table, it is
not a timed test.

bench/pipeline.py measures pipelines end to end over HTTP, where the client, the HTTP edge and
the Python stubs share the machine with the core and throughput swings 20-30% between runs on
a busy 2-core machine. This one builds what ``repoman serve`` builds behind the data plane (the
manager, the dispatcher, the shared scheduler) with one quick echo backend that runs on the
event loop, and sends requests straight to the dispatcher from ``--concurrency`` coroutines.
It reports the process's CPU time per request for:

- ``member``: a request to one member (the cost of any request through the scheduler);
- ``ensemble-1``: a one-step ensemble over that member (what an ensemble adds per request);
- ``ensemble-3``: a three-step chain (what each further step adds);
- ``member-later``: a request to a member whose batches are answered in a later event-loop
  iteration, as a Python stub's reply is (``Backend.execute_async``; the same echo): what the
  asynchronous path costs against ``member``'s inline one, no process hop involved.

Each row is the best of ``--rounds`` rounds of ``--requests`` requests (the least disturbed);
every member batches (``max_batch_size`` 8), and the mean batch is shown. Ratios come from the
same run: ``step`` is (ensemble-3 - ensemble-1) / 2 (one more step), ``fixed`` is
ensemble-1 - member.

Usage: .venv/bin/python bench/pipeline_core.py [--requests 20000] [--rounds 3]
       [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from repoman import Backend, BackendRegistry, Batch, Result
from repoman.aspired import Aspired, AspiredVersion
from repoman.config import parse_model_config
from repoman.config.model import ModelConfig
from repoman.manager import ModelManager
from repoman.pipeline.dispatch import Dispatcher
from repoman.scheduler import SharedScheduler


class QuickEcho(Backend):
    """Every output is the first input: no compute, so what is measured is the path."""

    may_run_inline = True

    def load(self) -> None:
        pass

    def execute(self, batch: Batch) -> Sequence[Result]:
        source = batch.merged()[batch.input_names[0]]
        return batch.split({name: source for name in batch.output_names})


class LaterEcho(QuickEcho):
    """QuickEcho whose results arrive a loop iteration later, through a future (the way a
    Python stub's reply does), on the event loop."""

    may_run_inline = False

    @property
    def runs_on_loop(self) -> bool:
        return True

    def execute_async(self, batch: Batch) -> asyncio.Future[Sequence[Result]]:
        loop = asyncio.get_running_loop()
        results: asyncio.Future[Sequence[Result]] = loop.create_future()
        loop.call_soon(results.set_result, self.execute(batch))
        return results


def member(name: str, backend: str = "quick_echo") -> ModelConfig:
    return parse_model_config(
        f'backend: "{backend}"\nmax_batch_size: 8\n'
        'input [{ name: "INPUT" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        'output [{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        "dynamic_batching { max_queue_delay_microseconds: 0 }",
        filename="config.pbtxt",
        fmt="pbtxt",
        model_name=name,
    )


def chain(name: str, members: Sequence[str]) -> ModelConfig:
    tensors = ["IN", *(f"t{i}" for i in range(len(members) - 1)), "OUT"]
    steps = "".join(
        f'step {{ model_name: "{m}" input_map {{ key: "INPUT" value: "{tensors[i]}" }} '
        f'output_map {{ key: "OUTPUT" value: "{tensors[i + 1]}" }} }}\n'
        for i, m in enumerate(members)
    )
    return parse_model_config(
        'platform: "ensemble"\nmax_batch_size: 8\n'
        'input [{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        'output [{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] }]\n'
        f"ensemble_scheduling {{ {steps} }}",
        filename="config.pbtxt",
        fmt="pbtxt",
        model_name=name,
    )


VARIANTS = {"member": ("a", "INPUT", "OUTPUT"), "ensemble-1": ("pipe1", "IN", "OUT"),
            "ensemble-3": ("pipe3", "IN", "OUT"), "member-later": ("later", "INPUT", "OUTPUT")}


class Core:
    def __init__(self) -> None:
        registry = BackendRegistry()
        registry.register("quick_echo", QuickEcho, default_model_filename="model.txt")
        registry.register("later_echo", LaterEcho, default_model_filename="model.txt")
        self.scheduler = SharedScheduler(1)
        self.dispatcher = Dispatcher(self.scheduler)
        self.manager = ModelManager(registry, self.dispatcher, blocked=self.dispatcher.blocked)
        self.dispatcher.bind(self.manager.route)

    async def serve(self, *configs: ModelConfig) -> None:
        for config in configs:
            version = AspiredVersion(1, config, (("f", 1, 1),), Path("/nowhere"), "")
            failures = await self.manager.apply(Aspired(config.name, (version,), frozenset({1})))
            assert failures == [], failures

    async def cpu_per_request(self, variant: str, requests: int, concurrency: int) -> float:
        model, input_name, output_name = VARIANTS[variant]
        rows = np.ones((1, 2), dtype=np.float32)
        left = requests

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                version = self.manager.route(model)
                await self.dispatcher.submit(version, {input_name: rows}, [output_name])

        started = time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return (time.process_time() - started) / requests * 1e6

    def mean_batch(self, model: str) -> float:
        stats = self.dispatcher.stats(self.manager.route(model))
        return stats.inference_count / max(1, stats.execution_count)


async def measure(args: argparse.Namespace) -> dict[str, float]:
    core = Core()
    await core.serve(member("a"), member("b"), member("c"), chain("pipe1", ["a"]),
                     chain("pipe3", ["a", "b", "c"]), member("later", "later_echo"))
    try:
        for variant in VARIANTS:  # NOTE: warm-up: code paths, caches, the inline gate
            await core.cpu_per_request(variant, args.requests // 4, args.concurrency)
        best = {variant: float("inf") for variant in VARIANTS}
        for round_ in range(args.rounds):
            for variant in VARIANTS:
                took = await core.cpu_per_request(variant, args.requests, args.concurrency)
                best[variant] = min(best[variant], took)
                print(f"round {round_ + 1}: {variant} {took:.1f} µs", file=sys.stderr)
        best["batch"] = min(core.mean_batch(name) for name in "abc")
        return best
    finally:
        await core.manager.shutdown()
        await core.scheduler.close(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    found = asyncio.run(measure(args))
    print(f"{'variant':<12} {'CPU µs/request':>15}  / member")
    for variant in VARIANTS:
        print(f"{variant:<12} {found[variant]:>15.1f}  {found[variant] / found['member']:>7.2f}")
    step = (found["ensemble-3"] - found["ensemble-1"]) / 2
    fixed = found["ensemble-1"] - found["member"]
    print(f"\nsmallest mean batch of a member: {found['batch']:.1f}")
    member_cost = found["member"]
    print(f"an ensemble's fixed cost: {fixed:.1f} µs ({fixed / member_cost:.2f} member requests)")
    print(f"each step: {step:.1f} µs ({step / found['member']:.2f} member requests)")


if __name__ == "__main__":
    main()
