"""Reading the YAML files users write: stack files and catalog entries.

Stack files hold encrypted values as ``{secure: v1:...}``. We keep those as :class:`Secure` markers: the
ciphertext is never decrypted here (the Pulumi engine does that and hands the program an ``Output``),
but the marker lets validation tell a secret that was set with ``--secret`` from one pasted in plain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import fail


@dataclass(frozen=True)
class Secure:
    """A value the stack file stores encrypted (``pulumi config set --secret``). Never decrypted here."""

    ciphertext: str

    def __repr__(self) -> str:  # never echo ciphertext into an error message
        return "Secure(...)"


def contains_secure(node: Any) -> bool:
    """True when ``node`` is, or holds anywhere inside it, an encrypted value."""
    if isinstance(node, Secure):
        return True
    if isinstance(node, dict):
        return any(contains_secure(v) for v in node.values())
    return isinstance(node, list) and any(contains_secure(v) for v in node)


def _mark_secure(node: Any) -> Any:
    if isinstance(node, dict):
        if set(node) == {"secure"} and isinstance(node["secure"], str):
            return Secure(node["secure"])
        return {k: _mark_secure(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mark_secure(v) for v in node]
    return node


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, display: str | None = None) -> Any:
    """Parse ``path``; a syntax error becomes a :class:`ConfigError` naming the file and line."""
    name = display or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(name, "", "file not found") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise fail(name, "", f"not valid YAML: {where}{problem}") from None
    return _mark_secure(data)
