"""``repoman tune``: find the batching settings that serve a model best, measured, and show why.

It measures the raw backend first (throughput per batch size, in this process), then starts a
``repoman serve`` of its own (or uses a running one), loads candidate configs into it one at a
time through the repository API and drives each with the closed-loop load generator of
``repoman perf``. ``add_arguments`` fills the ``tune`` sub-command's parser; ``run`` runs it.
"""

from __future__ import annotations

from repoman.tune.options import add_arguments
from repoman.tune.runner import run

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "search the batching settings of a model for the best throughput within a p99 budget"

DESCRIPTION = """\
Find the dynamic-batching settings (max_batch_size, max_queue_delay_microseconds,
preferred_batch_size, instance_group count) that give MODEL the most throughput while its p99
latency stays within --latency-budget-ms at every --concurrency, by measuring them.

1. The raw backend (one instance in this process, no server) is timed at batch 1, 2, 4, ...:
   where a bigger batch stops helping (the knee) bounds the batch sizes worth trying, with
   Cortex's rule of thumb (max batch ~ single-request throughput x acceptable wait); no
   batch above the highest concurrency (C clients never queue more than C requests) and
   none whose raw time alone is over half the budget.
2. A repoman server is started (explicit model control, 127.0.0.1, a free port) and each
   candidate config is loaded into it in turn and measured with a closed loop at each
   concurrency, several windows each (the spread column shows how far repeats disagree).
   Stages: the config as it is, batching off, batch sizes (no delay), a ladder of queue
   delays from half a raw batch time up (x4; TF Serving's CPU advice: 0-10 ms) and the knee
   as preferred size around the best, then more instances (up to one per core).
3. It prints the table with the Pareto front of throughput vs p99, recommends the best
   throughput within the budget (a change must beat the config as it is by more than the
   repeat noise), writes that config (pbtxt or YAML, as the model's) and a chart (SVG) of
   every config, the raw backend's curve and the budget.

The search stops early to keep --time-budget. Exit status: 0 when a config was written, 1 when
nothing could be measured, 2 for bad input.

examples:
  repoman tune digits --latency-budget-ms 20 --time-budget 60
  repoman tune heavy --repo bench/models --concurrency 8,32 --apply --plot heavy.svg
"""
