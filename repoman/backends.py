"""The backend contract every plugin implements, the batch it receives, and the backend registry."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repoman.config.model import ModelConfig
from repoman.errors import PluginError, RepomanError
from repoman.lazy import LazyReference
from repoman.signature import ModelSignature
from repoman.tensors import Rows, batch_rows, merge_rows


@dataclass(frozen=True)
class BackendContext:
    """Everything a backend instance needs to know about what it serves."""

    config: ModelConfig
    version: int
    version_path: Path
    model_path: Path
    """``version_path / (config.default_model_filename or the backend's default)``."""
    instance_name: str = ""
    instance_kind: str = "KIND_CPU"
    device_id: int | None = None


@dataclass
class Batch:
    """The requests of one execution, all for one model version, in arrival order.

    ``requests`` holds each request's inputs (already checked against the config and
    reshaped as the model expects). ``output_names`` is every output any of the requests
    asked for. Backends that work on whole tensors call ``merged()`` and ``split()``;
    backends that work per request (like the Python-model backend) read ``requests``.
    ``requests`` may be a :class:`~repoman.tensors.Rows` (an ensemble's step: the requests'
    tensors already end to end), which ``merged()`` takes as it is.
    """

    requests: Sequence[Mapping[str, np.ndarray]]
    output_names: tuple[str, ...]
    input_names: tuple[str, ...] = ()
    batching: bool = True
    pad_to: int = 0
    row_counts: list[int] | None = None
    """Rows per request when the caller already knows them (the scheduler does)."""
    request_ids: list[str] | None = None
    """Each request's id (``""`` when it has none), when the caller knows them."""
    request_parameters: list[Mapping[str, Any]] | None = None
    """Each request's parameters, when the caller knows them."""
    requested_outputs: list[tuple[str, ...]] | None = None
    """The outputs each request asked for (``output_names`` is their union)."""
    _merged: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def rows(self) -> list[int]:
        if self.row_counts is None:
            self.row_counts = [
                batch_rows(request) if self.batching else 1 for request in self.requests
            ]
        return self.row_counts

    @property
    def size(self) -> int:
        """Batch rows executed, padding excluded."""
        return sum(self.rows)

    def merged(self) -> dict[str, np.ndarray]:
        """Each input concatenated over the requests (padded to ``pad_to`` rows when set)."""
        if self._merged is None:
            requests = self.requests
            if not self.batching:
                self._merged = dict(requests[0])
            elif isinstance(requests, Rows):
                names = self.input_names or tuple(requests.whole)
                self._merged = merge_rows([requests.arrays(names)], names, self.pad_to)
            else:
                names = self.input_names or tuple(requests[0])
                self._merged = merge_rows(requests, names, self.pad_to)
        return self._merged

    def split(self, outputs: Mapping[str, np.ndarray]) -> Sequence[Mapping[str, np.ndarray]]:
        """One output mapping per request, in request order, padding cut off (a
        :class:`~repoman.tensors.Rows` of ``outputs``: each request's are views of them)."""
        if not self.batching:
            return [dict(outputs)]
        return Rows.of(outputs, self.rows)


Result = Mapping[str, np.ndarray] | Exception
"""What ``Backend.execute`` returns for one request: its outputs, or the error for it alone."""


class Backend(abc.ABC):
    """One instance of one model version (a session, a loaded graph, ...).

    The constructor must be cheap: it only stores the context. ``load`` does the
    expensive work, ``execute`` runs batches, ``unload`` releases resources. The core
    calls ``load``, ``execute`` and ``unload`` from worker threads, never from the event
    loop (unless the backend opts in with ``may_run_inline``), and never runs two
    ``execute`` calls of the same instance at once; blocking is fine. An error for one
    request goes into that request's slot of the returned list; raising fails the whole
    batch.

    A backend whose batches mostly wait on something else (another process, a remote
    server) may also define ``execute_async``: the core then awaits it on its event loop
    instead of holding a worker thread for the wait (see ``runs_on_loop``).
    """

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model. Raise (any exception) if it cannot be served."""

    @abc.abstractmethod
    def execute(self, batch: Batch) -> Sequence[Result]:
        """Run one batch; return one result per request, same length and order."""

    def unload(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release what ``load`` acquired. Default: nothing."""

    def memory_bytes(self) -> int | None:
        """Optional: the memory this instance holds that the server's own resident set does not
        show (a process of its own), asked once after ``load``. Default: None (its memory is
        in the server's process, measured as what the load added to the resident set)."""
        return None

    def execute_async(self, batch: Batch) -> Awaitable[Sequence[Result]]:
        """Optional: start ``batch`` now and return what will give its results: an ``async
        def`` (a coroutine, run as a task) or a plain method returning an asyncio future
        (work started before it returns, as the python backend sends a batch to its
        process). Called and awaited on the core's event loop when ``runs_on_loop``, with
        ``execute``'s contract (one result per request, never two batches at once per
        instance). It must not block: it awaits what it waits for (a socket read through
        the loop, a future) and keeps its own work short. Default: not defined."""
        raise NotImplementedError

    may_run_inline: bool = False
    """Whether the core may call ``execute`` on its event loop thread when this version's
    executions are measured quick (under the scheduler's limit, about twice what a hand-off
    costs on the machine, ``repoman.scheduler.inline.inline_limit``): handing a batch to a
    worker thread and back costs 100-200 µs of CPU, several times what a small model's
    execution does. Opt in only if ``execute`` only computes, on the calling thread: it never
    waits on another process, on threads of its own (a GPU, a thread pool), a lock held
    elsewhere or a call to a model, and its time follows its input; an execution is judged by
    the calling thread's CPU time. Read once, after ``load``. Default: False (always on a
    worker)."""

    @property
    def runs_on_loop(self) -> bool:
        """Whether the core runs this instance's batches with ``execute_async`` on its event
        loop (no worker thread held while they wait) rather than ``execute`` on a worker.
        Read once the instance is loaded. Default: whether the class defines
        ``execute_async``; an instance that serves some configs in-process and others
        elsewhere answers per instance. ``execute`` must work either way (warm-up and
        tools call it from threads)."""
        return type(self).execute_async is not Backend.execute_async


BackendFactory = Callable[[BackendContext], Backend]


Describe = Callable[[Path, Mapping[str, str]], ModelSignature]
"""Reads a model file (``version_path / default_model_filename``; the config's ``parameters``
alongside) without serving it: the one
way a backend describes a model, used to auto-complete configs and to check them before a load."""


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend: how to build it, which configs it serves, how to read a model."""

    name: str
    factory: BackendFactory
    platforms: tuple[str, ...] = ()
    default_model_filename: str = ""
    plugin: str = ""
    describe: Describe | None = None
    check_complete: bool = True
    """Whether a complete config is still described and compared with its model file before
    it loads (cheap readers of a file: yes; a ``describe`` that runs the model's own code,
    as the python backend's does: no, it only completes configs that leave things out)."""


class BackendRegistry:
    """Backend specs by name, filled by the ``repoman_register_backends`` hook.

    Each plugin's hook is handed ``registry.for_plugin(name)``, a view that adds to this
    registry and attributes what it registers to that plugin (for messages and listings).
    """

    def __init__(self) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self._plugin = ""

    def register(
        self,
        name: str,
        factory: BackendFactory | str,
        *,
        platforms: Sequence[str] = (),
        default_model_filename: str = "",
        describe: Describe | str | None = None,
        install_hint: str = "",
        check_complete: bool = True,
    ) -> None:
        """Make backend ``name`` available; it serves configs whose ``platform`` is listed.

        ``factory(context)`` builds one instance; usually it is the ``Backend`` class itself.
        ``describe``, when given, reads a model file's own inputs and outputs: it lets a
        model folder without a config (or with a partial one) be served (auto-complete),
        and, unless ``check_complete`` is False, checks a complete config against the model
        file before it loads.

        Either may be given as a string ``"package.module:name"`` instead: the module is then
        imported only when a model using the backend is first loaded or described, so a
        plugin whose backend needs a heavy library (onnxruntime, tensorflow) costs nothing to
        a server that has none of its models. A malformed reference fails here; one that
        cannot be imported fails that first load or describe, naming the reference; when what
        is missing is a package the backend's module imports, the error says so and adds
        ``install_hint`` (the command that installs it, e.g. ``pip install 'repoman[tensorflow]'``).
        """
        if not name or not isinstance(name, str):
            raise PluginError(f"a backend name must be a non-empty string, got {name!r}")
        if name in self._specs:
            owner = self._specs[name].plugin or "another plugin"
            raise PluginError(f"backend '{name}' is already registered by {owner}")
        if isinstance(factory, str):
            factory = LazyReference(factory, install_hint)
        if isinstance(describe, str):
            describe = LazyReference(describe, install_hint)
        self._specs[name] = BackendSpec(
            name,
            factory,
            tuple(platforms),
            default_model_filename,
            self._plugin,
            describe,
            check_complete,
        )

    def for_plugin(self, plugin: str) -> BackendRegistry:
        """This registry as ``plugin`` sees it: what it registers is attributed to ``plugin``."""
        return _PluginView(self, plugin)

    def resolve(self, config: ModelConfig) -> BackendSpec:
        """The backend serving ``config``: by its ``backend`` name, else by its ``platform``."""
        if config.backend:
            spec = self._specs.get(config.backend)
            if spec is None:
                raise UnknownBackend(f"backend '{config.backend}'", sorted(self._specs))
            return spec
        for spec in self._specs.values():
            if config.platform in spec.platforms:
                return spec
        platforms = sorted(p for s in self._specs.values() for p in s.platforms)
        raise UnknownBackend(f"platform '{config.platform}'", platforms)

    def specs(self) -> list[BackendSpec]:
        return sorted(self._specs.values(), key=lambda spec: spec.name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


class _PluginView(BackendRegistry):
    """One plugin's view of a registry; registering through it fills the registry itself."""

    def __init__(self, registry: BackendRegistry, plugin: str) -> None:
        # NOTE: the specs are shared, not copied, and the plugin name is fixed here, so no
        # state on the registry says whose turn it is.
        self._specs = registry._specs
        self._plugin = plugin


class UnknownBackend(RepomanError):
    """No registered backend serves a config's backend name or platform."""

    def __init__(self, what: str, known: Sequence[str]) -> None:
        listing = ", ".join(known) if known else "none"
        super().__init__(f"no backend is registered for {what} (registered: {listing})")
