"""The manager: model versions loaded, served and unloaded as the Source asks."""

from repoman.manager.budget import MemoryBooks
from repoman.manager.manager import MemoryRefusal, ModelManager, Serving, StateListener
from repoman.manager.version import ModelVersion, State

__all__ = [
    "MemoryBooks",
    "MemoryRefusal",
    "ModelManager",
    "ModelVersion",
    "Serving",
    "State",
    "StateListener",
]
