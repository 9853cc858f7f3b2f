"""How an execution's results reach the requests that waited for it: timed and counted in the
version's statistics, a failure translated for each request, a group's results one per request."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from repoman.backends import Batch, Result
from repoman.errors import BackendError, RepomanError
from repoman.scheduler.pending import Pending
from repoman.scheduler.queue import VersionQueue
from repoman.scheduler.running import request_error
from repoman.scheduler.stats import failure_reason
from repoman.tensors import Rows

log = logging.getLogger(__name__)

Compute = tuple[int, int, int]
"""An execution's nanoseconds: taking its inputs, computing, handing out its outputs."""


def count_execution(
    queue: VersionQueue, taken: Sequence[Pending], batch: Batch, compute: Compute
) -> None:
    """Record one execution of ``batch`` (the requests ``taken`` from ``queue``): in the
    version's statistics, and on each request (its share of compute, for its own report)."""
    if len(batch.requests) == 1 and taken[0].rows == 1:
        queue.stats.record_solo(*compute)
    else:
        queue.stats.record_batch(
            batch.size,
            len(batch.requests),
            input_ns=compute[0],
            infer_ns=compute[1],
            output_ns=compute[2],
        )
    for item in taken:
        item.compute = compute


def answer_execution(
    queue: VersionQueue,
    taken: Sequence[Pending],
    requests: int,
    results: object,
    now: float,
) -> None:
    """Answer the items ``taken`` for an execution of ``requests`` requests: ``results`` is what
    the backend returned, one result per request, in order (a group's requests take theirs
    together), or what the whole execution raised, every request's failure. Results that
    break the backend contract are failures too (:func:`_checked`): every request is
    answered, whatever came back. A version that preserves ordering
    answers its items in the order they arrived (``VersionQueue.deliver``)."""
    version = queue.version
    if not isinstance(results, BaseException):
        results = _checked(queue, results, requests)
    if isinstance(results, BaseException):
        failure = results
        if not isinstance(failure, RepomanError):
            failure = BackendError(
                f"model '{version.model}' version {version.version} failed: "
                f"{type(failure).__name__}: {failure}"
            )
        log.error("%s", failure)
        results = [failure] * requests
    answers: Sequence[Any] = results if requests == len(taken) else _grouped(taken, results)
    for item, result in zip(taken, answers, strict=True):
        if not queue.preserve_ordering:
            answer_item(queue, item, result, now)
            continue
        for ready, ordered in queue.deliver(item, result):
            answer_item(queue, ready, ordered, now)


def _checked(
    queue: VersionQueue, results: object, requests: int
) -> Sequence[Result] | BackendError:
    """What a backend returned, held to its contract (a sequence of one result per request,
    each a mapping of outputs or an exception): the results, a request's slot that breaks it
    replaced by its error; or one error for all when the whole does."""
    version = queue.version
    backend = f"backend of model '{version.model}' version {version.version}"
    if isinstance(results, Rows):  # NOTE: Batch.split's: mappings by construction
        if len(results) == requests:
            return results
    elif not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
        return BackendError(
            f"{backend} returned {type(results).__name__}, not a sequence of one result "
            f"per request (a mapping of output names to arrays, or an exception)"
        )
    elif not isinstance(results, (list, tuple)):
        # NOTE: a sequence of the backend's own making is read once, here, where what it
        # raises fails its batch (not later, in answering, where it would be lost)
        try:
            results = list(results)
        except Exception as exc:
            return BackendError(
                f"{backend} returned a {type(results).__name__} that could not be read: "
                f"{type(exc).__name__}: {exc}"
            )
    if len(results) != requests:
        return BackendError(
            f"{backend} returned {len(results)} results for a batch of {requests} requests"
        )
    if all(isinstance(result, (Mapping, Exception)) for result in results):
        return results
    checked: list[Result] = []
    breaches: list[BackendError] = []
    for index, result in enumerate(results):
        if not isinstance(result, (Mapping, Exception)):
            result = BackendError(
                f"{backend} returned {type(result).__name__} for request {index} of its batch, "
                f"not a mapping of output names to arrays (or an exception)"
            )
            breaches.append(result)
        checked.append(result)
    log.error("%s (%d of %d requests)", breaches[0], len(breaches), requests)
    return checked


def answer_item(
    queue: VersionQueue, item: Pending, result: Result | list[Result], now: float
) -> None:
    """Answer one queued item (a request, or a group with a result per request or one
    failure for all) and count it in ``queue``'s statistics; ``now``: the loop's time."""
    elapsed = int((now - item.arrived) * 1e9)
    if item.group is not None:  # NOTE: a group: one result per request
        # NOTE: one result for all (a failure), or a group of one answered as a request
        results = result if isinstance(result, Sequence) else [result] * item.count
        _answer_group(queue, item, cast(Sequence[Result], results), elapsed)
        return
    if isinstance(result, Exception):
        queue.stats.record_failure(failure_reason(result), elapsed)
        if not item.future.done():
            item.future.set_exception(request_error(queue.version, result))
    else:
        queue.stats.record_success(elapsed)
        if not item.future.done():
            item.future.set_result(cast(Mapping[str, np.ndarray], result))
    item.ended()


def _answer_group(
    queue: VersionQueue, item: Pending, results: Sequence[Result], elapsed: int
) -> None:
    stats, version = queue.stats, queue.version
    # NOTE: a Rows holds outputs only (a backend's split batch): no request failed
    if isinstance(results, Rows) or not any(isinstance(result, Exception) for result in results):
        stats.record_success(elapsed, len(results))
        if not item.future.done():
            item.future.set_result(cast(Any, results))  # NOTE: a group's: one per request
        item.ended()
        return
    answers: list[Result] = []
    failed = 0
    for result in results:
        if isinstance(result, Exception):
            stats.record_failure(failure_reason(result), elapsed)
            answers.append(request_error(version, result))
            failed += 1
        else:
            answers.append(result)
    if failed < len(results):
        stats.record_success(elapsed, len(results) - failed)
    if not item.future.done():
        item.future.set_result(cast(Any, answers))  # NOTE: a group's: one per request
    item.ended()


def _grouped(
    taken: Sequence[Pending], results: Sequence[Result]
) -> list[Result | Sequence[Result]]:
    """A batch's results, one per queued item: a group's as the sequence of its requests'
    (a slice of ``results``: of a ``Rows``, a ``Rows`` again)."""
    grouped: list[Result | Sequence[Result]] = []
    at = 0
    for item in taken:
        if item.group is None:
            grouped.append(results[at])
        else:
            grouped.append(results[at : at + item.count])
        at += item.count
    return grouped
