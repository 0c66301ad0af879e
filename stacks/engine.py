"""The stack's configuration as the Pulumi engine hands it to the program, and where each key came from.

The CLI merges the configuration from every place Pulumi documents (the stack file, an ESC environment
it imports, ``--config-file``, ``Pulumi.yaml``'s project defaults, Pulumi Deployments) and passes the
program one flat map, ``<namespace>:<key>`` to a string (objects and arrays JSON-encoded), with the
secret keys listed and their values decrypted; the Python SDK exposes them as
``pulumi.runtime.get_config_env()`` and ``get_config_secret_keys_env()`` (``PULUMI_CONFIG`` and
``PULUMI_CONFIG_SECRET_KEYS``). The loader validates that map, so a value from an environment is
checked exactly like one from the stack file.

The stack file is still read, for two things the merged map cannot say: whether a key is written there
(an error names the file; otherwise it says the value came from the stack's environment or config
file), and whether a value under ``platform:secrets`` is written in plain text there (the engine marks
the whole key secret as soon as one leaf is).

Offline (tests, ``tools.plan``) :func:`from_files` builds the same map from ``Pulumi.yaml`` and the stack
file, the way the CLI would, with a placeholder for each encrypted value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from .yamlio import Secure, contains_secure, read_yaml

PROJECT = "platform"
STACK_FILE_SECTIONS = ("config", "environment", "secretsprovider", "encryptedkey", "encryptionsalt")
"""What a stack file may hold at its top level (pulumi/pulumi sdk/go/common/workspace/project.go,
``ProjectStack``): anything else is a typo the CLI would ignore, taking its values with it."""


@dataclass(frozen=True)
class EngineConfig:
    values: dict[str, str]
    """``<namespace>:<key>`` -> the value as the engine sends it (a string; objects and arrays JSON)."""
    secret_keys: frozenset[str]
    file: str
    """``Pulumi.<stack>.yaml``."""
    file_config: dict[str, Any] = field(default_factory=dict)
    """The stack file's ``config:`` as written, encrypted values as :class:`~stacks.yamlio.Secure`."""

    def decoded(self, key: str) -> Any:
        """The value of ``key``: objects and arrays decoded, scalars as the strings the engine sends."""
        value = self.values.get(key)
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    def source(self, key: str) -> str:
        """Where a problem with ``key`` (``platform:systems.x...``) is to be fixed."""
        top = key.split(".", 1)[0].split("[", 1)[0]
        if top in self.file_config or self.values.get(top, "") in ("", "[]"):
            return self.file  # written there, or unset (absent, or a Pulumi.yaml default): the stack file is where to set it
        return f"the stack's environment or config file ({self.file} does not set {top})"


def from_program(stack: str, project_dir: Path) -> EngineConfig:
    """What the engine passed this run (the CLI sets ``PULUMI_CONFIG``; the SDK's own map as a fallback)."""
    values = dict(pulumi.runtime.get_config_env()) or dict(pulumi.runtime.config.CONFIG.get())
    secret_keys = frozenset(pulumi.runtime.get_config_secret_keys_env()) or frozenset(k for k in values if pulumi.runtime.is_config_secret(k))
    return EngineConfig({k: _as_engine_string(v) for k, v in values.items()}, secret_keys, *_stack_file(stack, project_dir))


def from_files(stack: str, project_dir: Path) -> EngineConfig:
    """What the CLI would pass for ``Pulumi.<stack>.yaml``: ``Pulumi.yaml``'s project defaults, then the
    stack file's values; objects JSON-encoded; each encrypted value replaced by a placeholder (a new
    ciphertext gives a new placeholder, as a new value would) and its key listed as secret."""
    file, file_config = _stack_file(stack, project_dir)
    values: dict[str, str] = {}
    project = read_yaml(project_dir / "Pulumi.yaml") if (project_dir / "Pulumi.yaml").exists() else {}
    for key, decl in ((project or {}).get("config") or {}).items():
        if isinstance(decl, dict) and "default" in decl:
            values[key if ":" in key else f"{PROJECT}:{key}"] = _as_engine_string(decl["default"])
    secret_keys = set()
    for key, value in file_config.items():
        key = key if ":" in str(key) else f"{PROJECT}:{key}"
        values[key] = _as_engine_string(placeholders(value, key))
        if contains_secure(value):
            secret_keys.add(key)
    return EngineConfig(values, frozenset(secret_keys), file, file_config)


def placeholders(node: Any, path: str) -> Any:
    """``node`` with each encrypted value replaced by a stand-in named after its path and ciphertext."""
    if isinstance(node, Secure):
        return f"offline-placeholder-for-{path}-{hashlib.sha256(node.ciphertext.encode()).hexdigest()[:8]}"
    if isinstance(node, dict):
        return {k: placeholders(v, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [placeholders(v, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _as_engine_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _stack_file(stack: str, project_dir: Path) -> tuple[str, dict[str, Any]]:
    """The stack file's name and its ``config:`` (empty when the file is absent or holds only an ``environment:`` import)."""
    from .errors import ConfigError, Problem, did_you_mean

    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        return path.name, {}
    raw = read_yaml(path, path.name)
    if isinstance(raw, dict) and (unknown := [str(k) for k in raw if k not in STACK_FILE_SECTIONS]):
        raise ConfigError(
            [
                Problem(
                    path.name,
                    key,
                    f"unknown top-level section '{key}'{did_you_mean(key, STACK_FILE_SECTIONS)} (a stack file holds only {', '.join(STACK_FILE_SECTIONS)})",
                )
                for key in unknown
            ]
        )
    if not isinstance(raw, dict) or not isinstance(raw.get("config") or {}, dict):
        raise ConfigError([Problem(path.name, "config", "expected a mapping of configuration keys")])
    return path.name, {(k if ":" in str(k) else f"{PROJECT}:{k}"): v for k, v in (raw.get("config") or {}).items()}
