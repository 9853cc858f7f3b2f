"""Hook specifications: what a repoman plugin can implement. Hooks register and observe only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from repoman.backends import BackendRegistry

PROJECT = "repoman"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# start-up hooks
# -------------------------------------------------------------------------


@hookspec
def repoman_register_backends(registry: BackendRegistry) -> None:
    """Register backend classes with ``registry.register(name, factory, platforms=...,
    default_model_filename=...)``.

    :param registry: the server's backend registry, as this plugin sees it: what it
        registers is attributed to it.

    Called once per plugin manager, before any model loads.
    """


# -------------------------------------------------------------------------
# model lifecycle hooks (observers: they run after the fact and cannot veto)
# -------------------------------------------------------------------------


@hookspec
def repoman_version_state_changed(model: str, version: int, state: str, reason: str) -> None:
    """Observe a model version changing state (``LOADING``, ``READY``, ``UNLOADING``,
    ``UNAVAILABLE``, ``FAILED``).

    :param model: the model name.
    :param version: the version number.
    :param state: the new state's name.
    :param reason: why, where there is one (a load error's message); else "".

    Called on the event loop thread; an implementation must not block.
    """


# -------------------------------------------------------------------------
# metrics hooks (observers: called when /metrics is scraped, never on the request path)
# -------------------------------------------------------------------------


@hookspec
def repoman_metrics_text() -> str:
    """Return lines to add to ``/metrics``, in the Prometheus text format (``# HELP`` and
    ``# TYPE`` lines, then samples; "" for none).

    Called on a worker thread each time ``/metrics`` is scraped; keep it to reading values
    already at hand. An implementation that raises is logged and left out of that scrape.
    """
    return ""
