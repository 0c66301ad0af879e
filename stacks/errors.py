"""One error type for every mistake a user can make in a stack file or catalog entry.

A :class:`ConfigError` carries the file, the key path and what is allowed. The program turns it into
``pulumi.RunError`` (a clean failure without a traceback) and ``tools.plan`` prints it and exits 2,
in both cases before a single resource is declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import get_args, get_origin

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Problem:
    """One mistake: where it is and what is allowed instead."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Raised for any invalid stack file or catalog entry. ``str(err)`` is the user-facing message."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [str(p) for p in self.problems]
        head = "invalid configuration" if len(lines) == 1 else f"invalid configuration ({len(lines)} problems)"
        return head + ":\n  " + "\n  ".join(lines)


def fail(file: str, key: str, message: str) -> ConfigError:
    """Shorthand for a single-problem error."""
    return ConfigError([Problem(file, key, message)])


def join_key(prefix: str, loc: Iterable[object]) -> str:
    """``join_key("platform:systems", ["twinkle", "images", 0])`` -> ``platform:systems.twinkle.images[0]``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out and not out.endswith(":") else str(part)
    return out


def _allowed_keys(model: type[BaseModel] | None, loc: Sequence[object]) -> list[str] | None:
    """Walk ``loc`` down the model's fields to list the keys allowed where an unknown key was found."""
    current: object = model
    free_key = False  # the previous field was a mapping, so this part is a user-chosen name
    for part in loc[:-1]:
        if free_key or isinstance(part, int):
            free_key = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        free_key = _is_mapping(field.annotation)
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def _is_mapping(annotation: object) -> bool:
    if get_origin(annotation) is dict:
        return True
    return any(_is_mapping(a) for a in get_args(annotation))


def _model_in(annotation: object) -> object:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def from_validation_error(err: ValidationError, file: str, prefix: str, model: type[BaseModel] | None = None) -> ConfigError:
    """Translate pydantic's errors into problems with our key paths and plain wording."""
    problems = []
    for e in err.errors(include_url=False):
        # pydantic adds the validator kind (e.g. "function-after") to loc for union/validator steps
        loc = [p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        key = join_key(prefix, loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            msg = f"unknown key '{loc[-1]}'" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if e["type"] not in ("value_error", "assertion_error") and "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
        problems.append(Problem(file, key, msg))
    return ConfigError(problems)
