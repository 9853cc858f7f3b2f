"""Ensembles: pipelines of models run in the core, every step through the shared scheduler."""
