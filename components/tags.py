"""Tags on every taggable AWS resource: who runs it, for which system and service, from where.

Two layers, with disjoint keys:

- **Stack-wide** (``environment``, ``managed-by``, ``repository``): the AWS provider's default tags,
  from the stack configuration ``aws:defaultTags`` (:func:`default_tags` gives the value each stack
  file must hold; :func:`default_tag_problems` checks what the engine passed). The provider adds them
  to every resource it manages that takes tags (terraform-provider-aws ``website/docs/index.html.markdown``,
  "default_tags Configuration Block"; pulumi-aws merges them into ``tags`` in its Check,
  pulumi/pulumi-aws#2655). Config rather than an explicit ``aws.Provider``: every resource keeps the
  default provider, so its provider reference does not change (an explicit provider gives every
  resource a new provider URN; the engine asks the provider's DiffConfig whether that replaces,
  pulumi/pulumi#18509, but a stack should not need to find out on its prod resources).
- **Per system and service** (``system``, ``service``): a stack transform
  (:func:`register_tag_transform`, ``pulumi.runtime.register_resource_transform``) run by the engine
  for every resource before it is registered. Every resource of a system sits under a top-level
  component named ``<system>`` or ``<system>-...`` (``twinkle-db``, ``twinkle-api``); a
  ``platform:compute:Service`` component is named ``<system>-<service>``. Everything else (network,
  keys, cluster, load balancer, alarm topic, Redis export) is ``system: shared``, so Cost Explorer
  groups every tagged cost under one of the systems or ``shared`` once ``system`` is activated as a
  cost allocation tag (Billing console, "Cost allocation tags"; user-defined tags appear there up to
  24 hours after they are first applied).

Keys never overlap between the two layers: a key in both would have the resource's value win
(same document), and identical key and value in both is what produced "tags are identical to
default_tags" errors and perpetual diffs in provider versions before 5.0
(hashicorp/terraform-provider-aws#30793, "default tags: zero value, duplicate, and computed tags").

A resource takes tags when its pulumi_aws input class has a ``tags`` property (a map); types whose
``tags`` is a list (``aws:autoscaling/group:Group``) are left alone. A tag the program sets itself
(``Name``, or ``system`` on a repository named after its system) is kept.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pulumi
from pulumi.runtime import rpc

ENVIRONMENT = "environment"
MANAGED_BY = "managed-by"
REPOSITORY = "repository"
SYSTEM = "system"
SERVICE = "service"
STACK_TAG_KEYS = (ENVIRONMENT, MANAGED_BY, REPOSITORY)
"""Set once per stack through ``aws:defaultTags``."""
RESOURCE_TAG_KEYS = (SYSTEM, SERVICE)
"""Set per resource by the transform."""
SHARED = "shared"
"""``system`` of what every system uses (network, keys, cluster, load balancer ...)."""
SERVICE_COMPONENT = "platform:compute:Service"
_ROOT = "pulumi:pulumi:Stack"


def default_tags(env: str, repository: str) -> dict[str, str]:
    """The provider's default tags for one stack: what ``aws:defaultTags.tags`` must hold."""
    return {ENVIRONMENT: env, MANAGED_BY: "pulumi", REPOSITORY: repository}


def default_tags_yaml(env: str, repository: str) -> str:
    """The lines to add under ``config:`` of ``Pulumi.<stack>.yaml``."""
    tags = default_tags(env, repository)
    return "  aws:defaultTags:\n    tags:\n" + "".join(f"      {k}: {v}\n" for k, v in tags.items())


def default_tag_problems(env: str, configured: Any, github_repository: str | None = None) -> list[str]:
    """What is wrong with the ``aws:defaultTags`` the engine passes (``configured``, decoded), as sentences.

    ``repository`` may be any non-empty name (this repository has no remote to read it from), but in
    GitHub Actions (``GITHUB_REPOSITORY=<owner>/<name>``) it must be that name.
    """
    tags = configured.get("tags") if isinstance(configured, Mapping) else None
    repository = tags.get(REPOSITORY) if isinstance(tags, Mapping) else None
    expected_repo = github_repository.rsplit("/", 1)[-1] if github_repository else None
    want = default_tags(env, expected_repo or (repository if isinstance(repository, str) and repository else "<repository name>"))
    if not isinstance(tags, Mapping):
        return [f"aws:defaultTags is not set: add to the stack file under 'config:'\n{default_tags_yaml(env, want[REPOSITORY])}"]
    problems = []
    for key, value in want.items():
        if tags.get(key) != value:
            problems.append(f"aws:defaultTags.tags.{key} must be {value!r} (got {tags.get(key)!r})")
    for key in tags:
        if key in RESOURCE_TAG_KEYS:
            problems.append(f"aws:defaultTags.tags.{key}: set per resource by the program; remove it from the default tags")
    return problems


def check_default_tags(env: str) -> None:
    """Stop the program unless the engine passes the default tags :func:`default_tags` describes."""
    problems = default_tag_problems(env, pulumi.Config("aws").get_object("defaultTags"), os.environ.get("GITHUB_REPOSITORY"))
    if problems:
        raise pulumi.RunError("; ".join(problems))


@functools.cache
def takes_tags(type_: str) -> bool:
    """Whether resources of ``type_`` (``aws:ecr/repository:Repository``) take a ``tags`` map, from
    the pulumi_aws SDK: the module pulumi_aws registers for the token, its ``<Class>Args``."""
    parts = type_.split(":")
    if len(parts) != 3 or parts[0] != "aws":
        return False
    module = rpc.get_resource_module(parts[0], parts[1], "")
    info = getattr(module, "mod_info", None)
    if not info or type_ not in info.get("classes", {}):
        return False
    args = getattr(importlib.import_module(info["fqn"]), info["classes"][type_] + "Args", None)
    prop = getattr(args, "tags", None)
    if not isinstance(prop, property) or prop.fget is None:
        return False
    hint = str(getattr(prop.fget, "__annotations__", {}).get("return", ""))
    return "Mapping" in hint


def _key(urn: str) -> str:
    """``<type chain>::<name>`` of a URN, the root stack's type left out (the engine leaves it out of
    its children's URNs; the mock monitor keeps it)."""
    if urn.count("::") < 3:
        return ""
    _, _, chain, name = urn.split("::", 3)
    return f"{chain.removeprefix(_ROOT + '$')}::{name}" if chain != _ROOT else ""


def _child_key(parent: str, type_: str, name: str) -> str:
    parent_key = _key(parent) if parent else ""
    chain = parent_key.split("::", 1)[0] if parent_key else ""
    return f"{chain + '$' if chain else ''}{type_}::{name}"


def _owner(systems: Iterable[str], type_: str, name: str) -> dict[str, str]:
    """system (and service) of a top-level component named ``name``."""
    for system in systems:
        if name == system or name.startswith(system + "-"):
            out = {SYSTEM: system}
            if type_ == SERVICE_COMPONENT and name != system:
                out[SERVICE] = name.removeprefix(system + "-")
            return out
    return {SYSTEM: SHARED}


def with_tags(tags: Any, add: Mapping[str, str]) -> Any:
    """``tags`` plus ``add``; a key already set wins. An unknown value (an Output) is merged when known."""
    if isinstance(tags, pulumi.Output):
        return tags.apply(lambda t: {**add, **(t or {})})
    return {**add, **(tags or {})}


def tag_transform(systems: Iterable[str]):
    """The transform: remembers each component's system and service, adds them to each taggable child.

    The engine passes the parent's URN (``TransformRequest.parent``; the SDK gives it as
    ``opts.parent``, a ``DependencyResource`` whose ``urn`` resolves to it), never the grandparent's,
    so the owner of each component is recorded when the component itself goes through the transform.
    """
    names = sorted(systems, key=len, reverse=True)  # "aurum-x" before "aurum" if both existed
    owners: dict[str, dict[str, str]] = {}

    async def transform(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
        parent = ""
        if args.opts is not None and args.opts.parent is not None:
            parent = await args.opts.parent.urn.future() or ""
        key = _child_key(parent, args.type_, args.name)
        parent_key = _key(parent) if parent else ""
        owner = owners.get(parent_key) if parent_key else None
        if owner is None:
            owner = _owner(names, args.type_, args.name)
        owners[key] = owner
        if not args.custom or not takes_tags(args.type_):
            return None
        tags = args.props.get("tags")
        if isinstance(tags, list):
            return None
        return pulumi.ResourceTransformResult(props={**args.props, "tags": with_tags(tags, owner)}, opts=args.opts)

    return transform


def register_tag_transform(systems: Iterable[str]) -> None:
    """Register :func:`tag_transform` for the whole stack; call before the first resource is declared."""
    pulumi.runtime.register_resource_transform(tag_transform(list(systems)))


__all__ = [
    "RESOURCE_TAG_KEYS",
    "SHARED",
    "STACK_TAG_KEYS",
    "check_default_tags",
    "default_tag_problems",
    "default_tags",
    "register_tag_transform",
    "tag_transform",
    "takes_tags",
]
