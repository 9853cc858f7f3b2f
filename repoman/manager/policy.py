"""The transition policy: what to do to make one model match its aspired versions (pure).

Availability first (TF Serving's availability-preserving policy, plus draining): a new or
changed version loads while what served before keeps serving; a version no longer wanted
keeps serving until a wanted one is READY, unless its files are gone or nothing is wanted
at all; a version that failed with exactly these files and config is not retried until they
change. The manager calls :func:`plan` again after each round of actions, until it returns
nothing: loads come first, the retirements they allow come in the next round.
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
class Retire:
    """Close, drain and unload ``version`` (just forget it when it is not READY)."""

    version: int


Action = Load | Retire


def plan(
    held: Mapping[int, Held], aspired: Aspired, failed: Mapping[int, Identity]
) -> list[Action]:
    """The actions to take now for one model, given the versions ``held`` (by number), the
    ``aspired`` state, and the identities each version last ``failed`` to load with."""
    if aspired.error:
        # NOTE: an invalid model config: keep serving what is there, but a version whose
        # files are gone is gone.
        return [Retire(v) for v in sorted(held) if v not in aspired.present]
    wanted = aspired.wanted
    loads: list[Action] = []
    for number, target in sorted(wanted.items()):
        current = held.get(number)
        ready = current is not None and current.state is State.READY
        if ready and current is not None and current.identity == target.identity:
            continue
        if failed.get(number) == target.identity:
            continue  # NOTE: failed with exactly these files and config: retry when they change
        loads.append(Load(target, replacing=ready))
    # NOTE: a READY wanted version serves after this round whatever its reload does (a
    # failed reload keeps the old one serving), so it already lets unwanted ones go.
    serving_wanted = any(held[v].state is State.READY for v in wanted if v in held)
    retires: list[Action] = [
        Retire(v)
        for v, h in sorted(held.items())
        if v not in wanted
        and (serving_wanted or not wanted or v not in aspired.present or h.state is not State.READY)
    ]
    return loads + retires
