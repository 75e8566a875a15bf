"""Schemas: read from the installed package, compiled once, validated fast.

Validation runs on every event, so the hot path asks a compiled validator (``jsonschema-rs``)
only "valid or not". When the answer is no, the ``jsonschema`` package explains why (the
quarantine records the reason); the config is validated with ``jsonschema`` too, since there
every error must be reported with its path.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

SCHEMA_PACKAGE = "siem_forwarder_schemas"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema file of the installed ``siem_forwarder_schemas`` package, parsed."""
    text = resources.files(SCHEMA_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass
class SchemaProblem:
    path: list[Any]
    message: str
    key: str | None = None  # for required/additionalProperties: the key whose line to report


def _draft_validator(schema: dict[str, Any]) -> Validator:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def explain_errors(schema: dict[str, Any], instance: Any, schema_id: str = "") -> list[SchemaProblem]:
    """Every validation error, sorted by path, each with a message an operator can act on."""
    validator = _draft_validator(schema)
    problems: list[SchemaProblem] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.path)), e.message)):
        key = None
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}) if isinstance(error.schema, dict) else ())
            extra = sorted(k for k in error.instance if k not in allowed)
            if extra:
                key = extra[0]
                message = ("unknown option" + ("s " if len(extra) > 1 else " ") + ", ".join(repr(k) for k in extra)
                           + (f" (known: {', '.join(sorted(allowed))})" if allowed else ""))
        elif error.validator in ("type", "enum", "const", "pattern", "minimum", "maximum", "minLength",
                                 "exclusiveMinimum", "maxLength") and _looks_secret(error.path):
            message = f"invalid value (hidden, it is a secret): fails '{error.validator}'"
        problems.append(SchemaProblem(list(error.path), message, key))
    return problems


def _looks_secret(path: Any) -> bool:
    from forwarder_core.secrets import SECRET_OPTION_NAMES

    return any(isinstance(p, str) and p in SECRET_OPTION_NAMES for p in path)


def _compile_fast(schema: dict[str, Any]) -> Callable[[Any], bool]:
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - jsonschema-rs is a dependency; keep working without it
        return _draft_validator(schema).is_valid
    return jsonschema_rs.validator_for(schema).is_valid


@functools.cache
def compiled(name: str) -> Callable[[Any], bool]:
    """The fast validator of a packaged schema, compiled once per process."""
    return _compile_fast(load_schema(name))


class EventValidator:
    """Valid-or-not for a source's raw events (before normalize) and its normalized events.

    The raw check comes first so that ``normalize`` only sees events of the promised shape and a
    malformed one is set aside with the schema's message, not with whatever ``normalize``
    tripped over. Each check is one call into the compiled validator; explaining is the slow
    path, taken only for an event that failed. ``check_raw`` and ``check_event`` are the
    compiled valid-or-not functions (``check_raw`` is None when the source has no raw schema).
    """

    def __init__(self, raw_schema: str | dict[str, Any] | None):
        self.event_schema = load_schema("event.schema.json")
        self.check_event: Callable[[Any], bool] = compiled("event.schema.json")
        if isinstance(raw_schema, str):
            self.raw_schema: dict[str, Any] | None = load_schema(raw_schema)
            self.check_raw: Callable[[Any], bool] | None = compiled(raw_schema)
        else:
            self.raw_schema = raw_schema
            self.check_raw = _compile_fast(raw_schema) if raw_schema is not None else None

    def raw_is_valid(self, raw: Any) -> bool:
        """Whether a raw event passes the source's raw-event schema (True when it has none)."""
        return self.check_raw is None or self.check_raw(raw)

    def is_valid(self, event: dict[str, Any]) -> bool:
        """Both checks on a normalized event (its ``raw`` against the raw schema), for events a
        plugin may have changed after they were first validated."""
        return self.check_event(event) and self.raw_is_valid(event.get("raw"))

    def explain_raw(self, raw: Any) -> str:
        """Why a raw event failed its raw schema, as ``raw schema: $.raw.path: message``."""
        return "; ".join(_reasons("raw", self.raw_schema, raw, "$.raw")) or "invalid raw event"

    def explain(self, event: Any) -> str:
        """Why a normalized event failed: the first few errors, as ``$.path: message``."""
        reasons = _reasons("raw", self.raw_schema, event.get("raw") if isinstance(event, dict) else None, "$.raw")
        return "; ".join(reasons or _reasons("event", self.event_schema, event, "$")) or "invalid event"


def _reasons(label: str, schema: dict[str, Any] | None, instance: Any, prefix: str) -> list[str]:
    if schema is None:
        return []
    reasons = []
    for problem in _iter_limited(schema, instance, 3):
        where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.path)
        reasons.append(f"{label} schema: {where}: {problem.message[:300]}")
    return reasons


def _iter_limited(schema: dict[str, Any], instance: Any, limit: int) -> Iterator[SchemaProblem]:
    validator = _draft_validator(schema)
    for n, error in enumerate(validator.iter_errors(instance)):
        if n >= limit:
            return
        yield SchemaProblem(list(error.path), error.message)
