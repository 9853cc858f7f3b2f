"""The Source: what the repository (disk, watcher, control API) wants served, per model."""
