"""Per-version queues, dynamic batches and the one shared worker pool that runs them."""

from repoman.scheduler.pending import PLAIN, RequestOptions
from repoman.scheduler.queue import QueueState
from repoman.scheduler.shared import SharedScheduler

__all__ = ["PLAIN", "QueueState", "RequestOptions", "SharedScheduler"]
