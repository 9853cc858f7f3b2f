"""The manager: model versions loaded, served and unloaded as the Source asks."""
