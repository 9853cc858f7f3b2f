"""The manager: model versions loaded, served and unloaded as the Source asks."""

from repoman.manager.manager import ModelManager, Serving, StateListener
from repoman.manager.version import ModelVersion, State

__all__ = ["ModelManager", "ModelVersion", "Serving", "State", "StateListener"]
