"""Comparing a config with what the model file itself declares (used at load and by validate)."""

from __future__ import annotations

from repoman.backends import ModelSignature
from repoman.config.model import ModelConfig


def compare_signature(config: ModelConfig, signature: ModelSignature) -> list[tuple[str, str]]:
    """(field, message) for each way the config disagrees with the model file."""
    problems = []
    strip = config.max_batch_size > 0
    if strip and not signature.batching:
        problems.append(
            (
                "max_batch_size",
                f"expected 0 (the model has no variable batch "
                f"dimension), found {config.max_batch_size}",
            )
        )
    for key, declared, actual in (
        ("input", config.inputs, signature.inputs),
        ("output", config.outputs, signature.outputs),
    ):
        by_name = {t.name: t for t in actual}
        for index, tensor in enumerate(declared):
            model_side = by_name.get(tensor.name)
            if model_side is None:
                names = ", ".join(sorted(by_name))
                problems.append(
                    (
                        f"{key}[{index}].name",
                        f"expected one of the model's {key}s ({names}), found '{tensor.name}'",
                    )
                )
                continue
            if model_side.data_type is not tensor.data_type:
                problems.append(
                    (
                        f"{key}[{index}].data_type",
                        f"the model says {model_side.data_type.config_name}, "
                        f"the config says {tensor.data_type.config_name}",
                    )
                )
            dims = model_side.dims[1:] if strip and signature.batching else model_side.dims
            want = tensor.reshape if tensor.reshape is not None else tensor.dims
            if len(dims) != len(want) or any(
                a != b and a >= 0 and b >= 0 for a, b in zip(dims, want, strict=True)
            ):
                problems.append(
                    (
                        f"{key}[{index}].dims",
                        f"the model says {list(dims)}, the config says {list(want)}",
                    )
                )
    return problems
