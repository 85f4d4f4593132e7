"""The executor spec, passed as JSON in env JSK8S_SPEC (docs/design.md, "Executor spec")."""

import json
import math
import os
from dataclasses import dataclass, field

from .jobdir import safe_relpath


class SpecError(ValueError):
    pass


@dataclass
class Spec:
    input: str
    outputs: dict[str, str]
    parameters: dict = field(default_factory=dict)
    kernel_name: str | None = None
    cell_timeout: int | None = None
    collect_hold_seconds: float = 600
    # Not part of the server's contract: how long `run` waits for stage-in before giving up.
    stage_timeout_seconds: float = 900

    @classmethod
    def from_env(cls) -> "Spec":
        raw = os.environ.get("JSK8S_SPEC")
        if not raw:
            raise SpecError("env JSK8S_SPEC is not set")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SpecError(f"JSK8S_SPEC is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data) -> "Spec":
        if not isinstance(data, dict):
            raise SpecError("the spec must be a JSON object")
        try:
            spec = cls(
                input=safe_relpath(data["input"]),
                outputs={str(fmt): safe_relpath(name) for fmt, name in (data.get("outputs") or {}).items()},
                parameters=dict(data.get("parameters") or {}),
                kernel_name=data.get("kernel_name") or None,
                cell_timeout=_positive_or_none(data.get("cell_timeout")),
                collect_hold_seconds=float(data.get("collect_hold_seconds", 600)),
                stage_timeout_seconds=float(data.get("stage_timeout_seconds", 900)),
            )
        except KeyError as e:
            raise SpecError(f"missing key {e}") from None
        except (TypeError, ValueError) as e:
            raise SpecError(str(e)) from None
        if spec.input in spec.outputs.values():
            raise SpecError("an output name equals the input name")
        return spec


def _positive_or_none(value):
    # nbclient wants whole seconds or None ("no per-cell timeout"); 0 or less means none to a user too.
    if value is None:
        return None
    value = float(value)
    return math.ceil(value) if value > 0 else None
