"""``repoman perf``: a closed-loop load generator for any KServe v2 server, like perf_analyzer.

A client only: it speaks HTTP to a server (repoman, Triton, anything v2) and never imports the
serving layers. ``add_arguments`` fills the ``perf`` sub-command's parser; ``run`` runs it.
"""

from __future__ import annotations

from repoman.perf.options import add_arguments
from repoman.perf.runner import run

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "load-test a model on any KServe v2 server (a perf_analyzer-like concurrency sweep)"

DESCRIPTION = """\
Load-test one model on a KServe v2 server (repoman, Triton or any other) with a closed loop,
as Triton's perf_analyzer does: for each concurrency level C, C clients each send a request,
wait for its whole answer and send the next. Each step warms up (--warmup, unmeasured), then
measures for --duration seconds or until --requests requests have completed, and prints one
table row: requests, errors, throughput (infer/s = rows/s, i.e. requests x --batch-size) and
p50/p90/p95/p99/mean latency in ms of the successful requests. Request bodies (random, zero or
--input-data FILE in perf_analyzer's JSON format) are encoded once before the load starts.
The last column is the load generator's own CPU use over the step (100 = one core busy): when
it nears 100 x --processes, the client, not the server, limits the numbers.

Exit status: 0 when every request succeeded, 1 when any failed (non-200 answers and
transport errors are counted, and summarised by message), 2 for bad flags, an unreachable
server or a model perf cannot drive.

examples:
  repoman perf -m digits --concurrency-range 1:64:x2 --duration 10
  repoman perf -m digits -u http://127.0.0.1:8000 --concurrency 1,8,32 --requests 2000 \\
      -b 8 --csv steps.csv --json steps.json
"""
