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
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail(name, "", "file not found") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise fail(name, _key_at(raw, err.start), _not_utf8(raw, err.start)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise fail(name, "", f"not valid YAML: {where}{problem}") from None
    return _mark_secure(data)


def _not_utf8(raw: bytes, at: int) -> str:
    """What is wrong with a file that is not UTF-8, and where (the YAML spec and Pulumi read UTF-8)."""
    line = raw.count(b"\n", 0, at) + 1
    column = len(raw[raw.rfind(b"\n", 0, at) + 1 : at].decode("utf-8", errors="replace")) + 1
    return (
        f"not UTF-8: byte 0x{raw[at]:02x} on line {line}, column {column} is not valid UTF-8 (a file saved as Latin-1 or "
        "Windows-1252, or UTF-16?); save the file as UTF-8"
    )


def _key_at(raw: bytes, at: int) -> str:
    """The key path of the value on the line of byte ``at`` (``platform:systems.darwin.env.X``), or ``""``.

    The text is decoded with replacement characters and composed (nodes only, nothing constructed), so
    an error can name the key as well as the line; the ``config:`` level of a stack file is left out,
    as everywhere else in the messages."""
    line = raw.count(b"\n", 0, at)
    try:
        node = yaml.compose(raw.decode("utf-8", errors="replace"), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ""
    path: list[str] = []
    while node is not None:
        found = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.start_mark.line <= line <= max(key.end_mark.line, value.end_mark.line - (value.end_mark.column == 0)):
                    found, step = value, str(key.value)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                if item.start_mark.line <= line <= item.end_mark.line:
                    found, step = item, f"[{i}]"
        if found is None:
            break
        path.append(step)
        node = found
    if path[:1] == ["config"] and len(path) > 1:
        path = path[1:]
    return "".join(p if p.startswith("[") or not i else f".{p}" for i, p in enumerate(path))
