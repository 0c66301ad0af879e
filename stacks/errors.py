"""One error type for every mistake a user can make in a stack file or catalog entry.

A :class:`ConfigError` carries the file, the key path and what is allowed. The program turns it into
``pulumi.RunError`` (a clean failure without a traceback) and ``tools.plan`` prints it and exits 2,
in both cases before a single resource is declared.
"""

from __future__ import annotations

import difflib
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


def close_matches(word: str, choices: Iterable[str]) -> list[str]:
    """The choices ``word`` is most likely a typo of (``sytems`` -> ``systems``), best first; several when
    they are equally close (``us-est-1``: ``us-east-1`` and ``us-west-1``); empty when none is close."""
    choices = list(dict.fromkeys(choices))
    scored = sorted(((difflib.SequenceMatcher(None, word, c).ratio(), i) for i, c in enumerate(choices)), key=lambda t: (-t[0], t[1]))
    if not scored or scored[0][0] < 0.6:
        return []
    return [choices[i] for ratio, i in scored if ratio == scored[0][0]]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` is most likely a typo of, or None when none is close."""
    found = close_matches(word, choices)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` (``'x' or 'y'`` for a tie; each shown after ``prefix``) for a likely typo, else ``""``."""
    found = close_matches(word, choices)
    return "; did you mean " + " or ".join(f"'{prefix}{m}'" for m in found) + "?" if found else ""


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
    errors = [(e, [p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]) for e in err.errors(include_url=False)]
    # pydantic adds the validator kind (e.g. "function-after") to loc for union/validator steps: dropped above
    meant = set()  # (parent loc, key) an unknown key is probably a typo of: its "missing" error is the same mistake
    for e, loc in errors:
        if e["type"] == "extra_forbidden" and (match := closest(str(loc[-1]), _allowed_keys(model, loc) or ())):
            meant.add((tuple(loc[:-1]), match))
    for e, loc in errors:
        key = join_key(prefix, loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc) or []
            msg = f"unknown key '{loc[-1]}'" + did_you_mean(str(loc[-1]), allowed) + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            if (tuple(loc[:-1]), loc[-1]) in meant:
                continue
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
                # a rule across a model's keys that names one of them first ("postgres.final_snapshot is off ...") is about that key
                path = msg.split(" ", 1)[0]
                if "." in path and _field_path_exists(model, loc, path.split(".")):
                    key = join_key(key, path.split("."))
            if e["type"] not in ("value_error", "assertion_error") and "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
        problems.append(Problem(file, key, msg))
    return ConfigError(problems)


def _field_path_exists(model: type[BaseModel] | None, loc: Sequence[object], path: Sequence[str]) -> bool:
    """``path`` (``["postgres", "final_snapshot"]``) names a field below the model found at ``loc``."""
    current: object = model
    for part in [*loc, *path]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return False
        field = current.model_fields.get(str(part))
        if field is None:
            return False
        current = _model_in(field.annotation)
    return True
