"""A third-party backend plugin: every output is its input times ``parameters.factor``."""

from __future__ import annotations

from repoman import Backend, BackendRegistry, Batch, hookimpl


class Doubler(Backend):
    def load(self) -> None:
        self.factor = float(self.context.config.parameters.get("factor", "2"))

    def execute(self, batch: Batch):  # type: ignore[no-untyped-def]
        merged = batch.merged()
        source = merged[batch.input_names[0]]
        return batch.split({name: source * self.factor for name in batch.output_names})


@hookimpl
def repoman_register_backends(registry: BackendRegistry) -> None:
    registry.register("doubler", Doubler, platforms=["doubler"], default_model_filename="model.txt")
