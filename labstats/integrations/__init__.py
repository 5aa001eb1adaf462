"""Adapters for training frameworks. Each module imports its framework, so import the one
you use; labstats itself never imports a framework.

    from labstats.integrations.lightning import LabstatsLogger      # PyTorch Lightning
    from labstats.integrations.keras import LabstatsCallback        # Keras 3
    from labstats.integrations.huggingface import LabstatsCallback  # transformers' Trainer
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flat_config(params: Any, prefix: str = "") -> dict[str, Any]:
    """A config for Stats: nested mappings flattened to "a.b" keys; argparse Namespaces and
    objects with ``to_dict()`` read as mappings; values that are not plain kept as text."""
    if hasattr(params, "to_dict") and not isinstance(params, Mapping):
        params = params.to_dict()
    elif not isinstance(params, Mapping) and hasattr(params, "__dict__"):
        params = vars(params)
    out: dict[str, Any] = {}
    for key, value in dict(params).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{name}."))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, bool | int | float | str) for v in value):
            out[name] = list(value)
        else:
            out[name] = str(value)
    return out


def numeric(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values of a framework's logs that are numbers (or one-element tensors)."""
    return {key: value for key, value in (logs or {}).items() if _is_number(value)}


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, bool | int | float)
        or getattr(value, "ndim", None) == 0
        or (getattr(value, "shape", None) == (1,))
    )
