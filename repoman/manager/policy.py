"""The transition policy: what to do to make one model match its aspired versions (pure).

Availability first (TF Serving's availability-preserving policy, plus draining): a new or
changed version loads while what served before keeps serving; a version no longer wanted
keeps serving until a wanted one is READY, unless its files are gone or nothing is wanted
at all; a version that failed with exactly these files and config is not retried until they
change. The manager calls :func:`plan` again after each round of actions, until it returns
nothing: loads come first, the retirements they allow come in the next round.

Lazy loading: a version that need not be in memory now is parked (AVAILABLE: its first request
loads it). That is a LAZY model's new version while none of its versions is in memory, and any
new version of a model the memory budget or idleness unloaded (the new one is what loads next).
A model with a version in memory loads its new versions at once, as before, so a hot reload of a
model in use swaps without a cold start. An explicit load (``force``) loads whatever it wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from repoman.aspired import Aspired, AspiredVersion, Fingerprint
from repoman.config.model import ModelConfig
from repoman.manager.version import State

Identity = tuple[Fingerprint, ModelConfig]


@dataclass(frozen=True)
class Held:
    """What the policy knows of a version the manager holds."""

    state: State
    identity: Identity


@dataclass(frozen=True)
class Load:
    """Load ``target``. ``replacing``: a READY version of that number keeps serving until the
    new one is READY (then it is drained and unloaded), and keeps serving if the load fails."""

    target: AspiredVersion
    replacing: bool = False


@dataclass(frozen=True)
class Park:
    """Hold ``target`` as AVAILABLE, not in memory: its first request loads it."""

    target: AspiredVersion


@dataclass(frozen=True)
class Retire:
    """Close, drain and unload ``version`` (just forget it when it is not READY)."""

    version: int


Action = Load | Park | Retire


def is_lazy(target: AspiredVersion, lazy_default: bool) -> bool:
    """Loaded by its first request rather than at once (an ensemble has nothing to load)."""
    config = target.config
    if config.is_ensemble:
        return False
    load = config.management.load
    return load == "LAZY" or (not load and lazy_default)


def plan(
    held: Mapping[int, Held],
    aspired: Aspired,
    failed: Mapping[int, Identity],
    *,
    lazy_default: bool = False,
    force: bool = False,
) -> list[Action]:
    """The actions to take now for one model, given the versions ``held`` (by number), the
    ``aspired`` state, and the identities each version last ``failed`` to load with.
    ``lazy_default``: a model whose config does not say is LAZY; ``force``: load every wanted
    version into memory (an explicit load), parked ones included."""
    if aspired.error:
        # NOTE: an invalid model config: keep serving what is there, but a version whose
        # files are gone is gone.
        return [Retire(v) for v in sorted(held) if v not in aspired.present]
    wanted = aspired.wanted
    in_memory = any(h.state is State.READY for h in held.values())
    parked = not in_memory and any(h.state is State.AVAILABLE for h in held.values())
    loads: list[Action] = []
    for number, target in sorted(wanted.items()):
        current = held.get(number)
        ready = current is not None and current.state is State.READY
        parked_same = (
            current is not None
            and current.identity == target.identity
            and (ready or (current.state is State.AVAILABLE and not force))
        )
        if parked_same:
            continue
        if failed.get(number) == target.identity:
            continue  # NOTE: failed with exactly these files and config: retry when they change
        if ready or force or in_memory or not (parked or is_lazy(target, lazy_default)):
            loads.append(Load(target, replacing=ready))
        else:
            loads.append(Park(target))
    # NOTE: a READY wanted version serves after this round whatever its reload does (a
    # failed reload keeps the old one serving), so it already lets unwanted ones go; so does
    # an AVAILABLE one (its first request loads it).
    serving_wanted = any(
        held[v].state in (State.READY, State.AVAILABLE) for v in wanted if v in held
    )
    retires: list[Action] = [
        Retire(v)
        for v, h in sorted(held.items())
        if v not in wanted
        and (serving_wanted or not wanted or v not in aspired.present or h.state is not State.READY)
    ]
    return loads + retires
