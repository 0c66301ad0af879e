"""The mandatory policies, enforced by the program itself.

With Pulumi Cloud and a policy group, or in CI with ``--policy-pack policy``, the engine runs the pack.
A ``pulumi up`` from a laptop against a self-managed backend (S3) runs no pack at all, so the program
refuses the same things on its own: a stack transform sees every resource's type and inputs before the
engine registers it and fails the program when a mandatory rule of ``policy/rules.py`` (the very
functions the pack serves) finds a violation. The resource is then never created or updated.

- Transforms: ``pulumi.runtime.register_resource_transform`` (pulumi 3.272, pulumi/runtime/stack.py)
  applies to every resource constructed after the call; the engine calls it back with the inputs in the
  form it registers them (camelCase keys, numbers as floats, secrets wrapped, unknowns during a preview:
  pulumi/runtime/_callbacks.py ``register_transform`` → ``deserialize_properties``), which is what the
  pack's checks read, so both see the same props.
- Per-stack settings come from the file CI passes the pack, ``policy/config/<stack>.json``: its
  enforcement levels (dev's plain-HTTP listener is advisory) and properties (dev's port range). A stack
  without a file gets every rule at its default level, the strictest.
- "prod" is the preset the program resolved (``platform:preset``, default the stack name), so a stack
  ``prod-eu`` with preset ``prod`` is held to the prod rules, as the pack does (``rules.is_prod``).
- A value that is unknown during a preview skips the rule that reads it, as pulumi-policy does
  (pulumi_policy/policy.py: ``UnknownValueError`` → "can't run policy ... during preview"); at
  ``pulumi up`` the inputs are known when the resource registers, and the rule runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
from pulumi.output import Unknown
from pulumi.runtime import rpc

from . import rules

CONFIG_DIR = Path(__file__).resolve().parent / "config"


class UnknownValue(Exception):  # noqa: N818 - mirrors pulumi-policy's UnknownValueError
    """A rule read an input that is not known yet (a preview)."""


_UNKNOWN = object()


def _plain(value: Any) -> Any:
    """The engine's form without wrappers: secrets unwrapped, unknowns marked."""
    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return _UNKNOWN
    if rpc.is_rpc_secret(value):
        return _plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _known(value: Any) -> Any:
    if value is _UNKNOWN:
        raise UnknownValue
    if isinstance(value, dict):
        return _KnownMapping(value)
    if isinstance(value, list):
        return _KnownList(value)
    return value


class _KnownMapping(Mapping[str, Any]):
    """Raises :class:`UnknownValue` when a rule reads a value that is unknown."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return _known(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _KnownList(Sequence[Any]):
    def __init__(self, data: list[Any]) -> None:
        self._data = data

    def __getitem__(self, index: Any) -> Any:
        return _known(self._data[index])

    def __len__(self) -> int:
        return len(self._data)


def policy_config(stack: str) -> dict[str, Any]:
    """``policy/config/<stack>.json``, the config CI passes the pack for this stack; ``{}`` if none. A pull
    request's ephemeral environment (``<system>-pr-<n>``, generated, never committed) runs on the dev core
    under dev's file, as the preview-env workflow passes it."""
    if re.fullmatch(r"[a-z0-9-]+-pr-[0-9]+", stack):
        stack = "dev"
    path = CONFIG_DIR / f"{stack}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _level(rule: rules.Rule, given: Mapping[str, Any]) -> str:
    """The rule's enforcement level after the config file, as the engine applies it ("all" first, then
    the policy's own entry: pulumi/pulumi pkg/resource/analyzer/config.go ``applyConfig``)."""
    level = rule.level
    if isinstance(given.get("all"), str):
        level = given["all"]
    entry = given.get(rule.name)
    if isinstance(entry, str):
        level = entry
    elif isinstance(entry, Mapping) and entry.get("enforcementLevel"):
        level = entry["enforcementLevel"]
    return level


def _rule_config(rule: rules.Rule, given: Mapping[str, Any], preset: str, protect: bool | None) -> dict[str, Any]:
    """Schema defaults, then the file's properties, plus the stack's preset (``rules.STACK_PRESET``) and
    the resource's ``protect`` option (``rules.PROTECT``)."""
    defaults = {k: v["default"] for k, v in (rule.config or {}).items() if "default" in v}
    entry = given.get(rule.name)
    props = {k: v for k, v in entry.items() if k != "enforcementLevel"} if isinstance(entry, Mapping) else {}
    return {**defaults, **props, rules.STACK_PRESET: preset, rules.PROTECT: protect}


def urn_of(stack: str, type_: str, name: str, parent_urn: str = "") -> str:
    """The URN the engine gives a resource: its parent's type chain, ``$``, its type."""
    qualified = type_
    if parent_urn and parent_urn.count("::") >= 3:
        parent_types = parent_urn.split("::")[2]
        if parent_types != "pulumi:pulumi:Stack":
            qualified = f"{parent_types}${type_}"
    return f"urn:pulumi:{stack}::{rules.PROJECT}::{qualified}::{name}"


def check_resource(type_: str, inputs: Mapping[str, Any], stack_config: Mapping[str, Any], *, urn: str | None = None, protect: bool | None = None) -> list[str]:
    """The violations of every rule enforced as mandatory for this stack, ``"<policy>: <message>"``.

    ``inputs``: the resource's inputs as the engine has them (camelCase). ``stack_config``: ``stack``
    (its name), ``preset`` (``platform:preset``, default the name) and optionally ``policy_config``
    (default: ``policy/config/<stack>.json``). ``urn`` places the resource (the load balancer's
    children may admit the internet); default: a top-level resource. ``protect``: its Pulumi option.
    """
    stack = str(stack_config.get("stack") or pulumi.get_stack())
    preset = str(stack_config.get("preset") or stack)
    given = stack_config.get("policy_config")
    if given is None:
        given = policy_config(stack)
    urn = urn or urn_of(stack, type_, "resource")
    props = _KnownMapping(_plain(dict(inputs)))
    out: list[str] = []
    for rule in rules.RULES:
        if type_ not in rule.types or _level(rule, given) != rules.MANDATORY:
            continue
        try:
            found = rule.check(type_, props, urn, _rule_config(rule, given, preset, protect))
        except UnknownValue:
            continue  # a preview: the update checks the known value
        out += [f"{rule.name}: {message}" for message in found]
    return out


def transform(stack: str, preset: str) -> Any:
    """A resource transform that fails the program on a mandatory violation, naming resource and policy."""
    stack_config = {"stack": stack, "preset": preset, "policy_config": policy_config(stack)}

    async def enforce_mandatory_policies(args: pulumi.ResourceTransformArgs) -> None:
        if not args.custom:
            return None  # components hold no settings the rules read
        parent = args.opts.parent if args.opts is not None else None
        parent_urn = await pulumi.Output.from_input(parent.urn).future() if parent is not None else ""
        protect = args.opts.protect if args.opts is not None else None
        urn = urn_of(stack, args.type_, args.name, parent_urn or "")
        violations = check_resource(args.type_, args.props, stack_config, urn=urn, protect=protect)
        if violations:
            message = (
                f"{args.name} ({args.type_}) breaks the mandatory policies of policy/rules.py that CI enforces; "
                f"fix the program or the stack file: " + "; ".join(violations)
            )
            pulumi.log.error(message)
            raise pulumi.RunError(message)
        return None

    return enforce_mandatory_policies


def enforce(stack: str, preset: str) -> None:
    """Apply :func:`transform` to every resource the program registers from now on: call it before the
    first resource is constructed."""
    pulumi.runtime.register_resource_transform(transform(stack, preset))


__all__ = ["check_resource", "enforce", "policy_config", "transform", "urn_of"]
