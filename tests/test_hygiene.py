"""Stack hygiene: tags on every taggable resource, protected state in prod, stable URNs, and an ECR
lifecycle that never expires an image a stack file pins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime._callbacks import _CallbackServicer
from pulumi.runtime.proto import resource_pb2

from components import registry as reg
from components import tags
from components.platform import run_stack
from stacks.config import load_platform
from tests.conftest import ROOT, load_stack_yaml
from tools import harness, urns

STACK_FILES = ("dev", "staging", "prod", "staging-eks")
KEY = "aws:kms/key:Key"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
SECRET = "aws:secretsmanager/secret:Secret"
REPOSITORY = "aws:ecr/repository:Repository"
STATE = (KEY, REDIS, SECRET)


# ------------------------------------------------------------------ the engine's stack transforms


def _callback(fn):
    for servicer in _CallbackServicer._servicers:
        token = servicer._transforms.get(fn)
        if token is not None:
            return servicer, servicer._callbacks[token]
    raise LookupError("transform registered without a callback server")


class TransformingMonitor(harness.RecordingMonitor):
    """The recording monitor, plus what the engine does and the mock monitor does not: every stack
    transform the program registered (``RegisterStackTransform``) is called through its callback
    (``TransformRequest`` with type, name, custom, parent and properties, as the engine sends it) before
    the registration is recorded, and the registration carries the transformed properties."""

    def RegisterResource(self, request):  # gRPC method name
        if request.type != "pulumi:pulumi:Stack" and self._stack_transforms:
            props = request.object
            for fn in self._stack_transforms:
                servicer, callback = _callback(fn)
                call = resource_pb2.TransformRequest(type=request.type, name=request.name, custom=request.custom, parent=request.parent, properties=props)
                # the SDK calls the monitor from a worker thread; the callback runs on the program's loop
                props = asyncio.run_coroutine_threadsafe(callback(call.SerializeToString()), servicer._loop).result().properties
            transformed = resource_pb2.RegisterResourceRequest()
            transformed.CopyFrom(request)
            transformed.object.CopyFrom(props)
            request = transformed
        return super().RegisterResource(request)


@contextmanager
def engine_transforms() -> Iterator[None]:
    plain = harness.RecordingMonitor
    harness.RecordingMonitor = TransformingMonitor
    try:
        yield
    finally:
        harness.RecordingMonitor = plain


def tagged_plan(stack: str, project_dir: Path = ROOT) -> harness.Capture:
    with engine_transforms():
        return harness.run(stack, project_dir, program=lambda: run_stack(project_dir))


@pytest.fixture(scope="module")
def tagged() -> dict[str, harness.Capture]:
    return {stack: tagged_plan(stack) for stack in ("dev", "staging", "prod")}


# ------------------------------------------------------------------ 1. tags


@pytest.mark.parametrize("stack", STACK_FILES)
def test_every_stack_file_sets_the_stack_wide_default_tags(stack):
    values, _ = harness.engine_config(stack, ROOT)
    env = load_platform(stack, ROOT).env
    configured = json.loads(values["aws:defaultTags"]) if "aws:defaultTags" in values else None
    assert tags.default_tag_problems(env, configured) == []


def test_every_stack_names_the_same_repository():
    names = {json.loads(harness.engine_config(s, ROOT)[0].get("aws:defaultTags", "{}")).get("tags", {}).get("repository") for s in STACK_FILES}
    assert len(names) == 1 and None not in names, names


def test_a_stack_without_default_tags_stops_with_the_lines_to_add(project):
    def drop(config):
        config.pop("aws:defaultTags", None)

    with pytest.raises(pulumi.RunError, match=r"aws:defaultTags is not set(.|\n)*environment: dev"):
        harness.run("test", (d := project("dev", drop)), program=lambda: run_stack(d))


def test_default_tags_in_ci_name_the_github_repository():
    good = {"tags": tags.default_tags("prod", "platform")}
    assert tags.default_tag_problems("prod", good, "acme/platform") == []
    assert tags.default_tag_problems("prod", good, "acme/other") == ["aws:defaultTags.tags.repository must be 'other' (got 'platform')"]
    assert tags.default_tag_problems("dev", good)[0].startswith("aws:defaultTags.tags.environment must be 'dev'")


def _taggable(capture: harness.Capture) -> list[harness.Resource]:
    return [r for r in capture.resources if r.custom and tags.takes_tags(r.type)]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_taggable_resource_names_its_system_and_service(tagged, stack):
    capture = tagged[stack]
    systems = set(load_platform(stack, ROOT).systems)
    assert _taggable(capture), "no taggable resource found"
    wrong = []
    for r in _taggable(capture):
        got = r.inputs.get("tags") or {}
        top = capture.by_urn(r.urn)
        while top.parent in {x.urn for x in capture.resources}:
            top = capture.by_urn(top.parent)
        owner = next((s for s in systems if top.name == s or top.name.startswith(s + "-")), None)
        want = {"system": owner or tags.SHARED}
        if r.type == REPOSITORY:
            want = {"system": r.inputs["name"].split("/")[0]}  # storage per system
        if top.type == tags.SERVICE_COMPONENT and owner:
            want["service"] = top.name.removeprefix(owner + "-")
        if {k: got.get(k) for k in want} != want or ("service" in got and "service" not in want):
            wrong.append(f"{r.type} {r.name}: {got}")
    assert wrong == []


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_cost_explorer_splits_every_tagged_cost_by_system(tagged, stack):
    systems = set(load_platform(stack, ROOT).systems)
    seen = {(r.inputs.get("tags") or {}).get("system") for r in _taggable(tagged[stack])}
    assert seen == systems | {tags.SHARED}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_resource_tags_never_repeat_a_default_tag_key(tagged, stack):
    clash = [f"{r.type} {r.name}" for r in tagged[stack].resources if set(r.inputs.get("tags") or {}) & set(tags.STACK_TAG_KEYS)]
    assert clash == []


def test_the_sdk_tells_which_types_take_tags():
    assert tags.takes_tags("aws:ecs/service:Service") and tags.takes_tags("aws:lambda/function:Function")
    assert not tags.takes_tags("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert not tags.takes_tags("aws:autoscaling/group:Group")  # a list of tag blocks, not a map
    assert not tags.takes_tags("random:index/randomPassword:RandomPassword")


# ------------------------------------------------------------------ 2. protect


def test_prod_protects_every_resource_that_holds_state_or_its_keys(prod):
    for type_ in STATE:
        found = prod.of_type(type_)
        assert found, type_
        assert [r.name for r in found if not r.options["protect"]] == [], type_
    assert len(prod.of_type(KEY)) == 2  # the environment key and the DR key
    assert all(r.options["retainOnDelete"] for r in prod.of_type(KEY))


def test_dev_protects_none_of_it(plans):
    dev = plans["dev"]
    assert [r.name for t in (*STATE, REPOSITORY) for r in dev.of_type(t) if r.options["protect"]] == []
    assert not any(r.options["retainOnDelete"] for r in dev.of_type(KEY))


def test_a_protected_stack_that_creates_the_repositories_protects_them(project):
    def create(config):
        config["platform:registry"] = {"create": True}

    d = project("staging", create)
    capture = harness.run("test", d, program=lambda: run_stack(d))
    repos = capture.of_type(REPOSITORY)
    assert repos and all(r.options["protect"] and r.options["retainOnDelete"] for r in repos)


# ------------------------------------------------------------------ 3. URN stability


@pytest.mark.parametrize("stack", urns.STACKS)
def test_no_urn_disappears(plans, stack):
    assert urns.snapshot_path(stack).exists(), f"no snapshot: python -m tools.urns --write --stack {stack}"
    gone, new = urns.compare(stack, urns.urns(plans[stack]))
    for urn in new:
        print(f"new URN in {stack}: {urn}")
    assert gone == [], (
        f"{len(gone)} URN(s) of {stack} disappear, so `pulumi up` deletes (or replaces) them. Add an alias "
        "(pulumi.ResourceOptions(aliases=[pulumi.Alias(name=...)])) or, if that is meant, "
        f"`python -m tools.urns --write --stack {stack}`"
    )


def test_snapshot_urns_are_the_engines(plans):
    assert all("pulumi:pulumi:Stack$" not in u for u in urns.urns(plans["dev"]))
    assert urns.engine_urn("urn:pulumi:dev::platform::pulumi:pulumi:Stack$a:b:C$d:e:F::n") == "urn:pulumi:dev::platform::a:b:C$d:e:F::n"


# ------------------------------------------------------------------ 4. ECR lifecycle


def _matches(rule: dict, image_tags: list[str]) -> bool:
    sel = rule["selection"]
    if sel["tagStatus"] == "untagged":
        return not image_tags
    if sel["tagStatus"] == "any":
        return True
    if not image_tags:
        return False
    prefixes = sel.get("tagPrefixList") or []
    return all(any(t.startswith(p) for t in image_tags) for p in prefixes)


def expire(policy: dict, images: dict[str, tuple[datetime, list[str]]], now: datetime) -> set[str]:
    """Which images ECR's lifecycle evaluation expires (Amazon ECR User Guide, "Lifecycle policies",
    evaluation rules): rules by ascending priority; an image is expired by at most one rule; an image
    matching the tag filter of a higher-priority rule cannot be expired by a lower one; counts keep the
    newest by push time."""
    expired: set[str] = set()
    claimed: set[str] = set()
    for rule in sorted(policy["rules"], key=lambda r: r["rulePriority"]):
        sel = rule["selection"]
        chosen = [d for d, (_, t) in images.items() if _matches(rule, t)]
        if sel["countType"] == "imageCountMoreThan":
            newest_first = sorted(chosen, key=lambda d: images[d][0], reverse=True)
            over = newest_first[sel["countNumber"] :]
        else:
            over = [d for d in chosen if now - images[d][0] > timedelta(days=sel["countNumber"])]
        expired |= {d for d in over if d not in claimed and d not in expired}
        claimed |= set(chosen)
    return expired


TODAY = {
    "rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}},
        {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 200}},
    ]
}


def _history(pinned_tags: list[str]) -> tuple[dict[str, tuple[datetime, list[str]]], str, datetime]:
    start = datetime(2026, 1, 1)
    pinned = "sha256:" + "a" * 64
    images = {pinned: (start, ["build-aaaaaaaa", *pinned_tags])}
    for i in range(250):  # 250 newer builds
        images[f"sha256:{i:064x}"] = (start + timedelta(hours=i + 1), [f"build-{i:08x}"])
    images["sha256:" + "f" * 64] = (start, [])  # an untagged push, a month old
    return images, pinned, start + timedelta(days=30)


def test_todays_policy_expires_a_pinned_digest_after_200_newer_builds():
    images, pinned, now = _history([])
    assert pinned in expire(TODAY, images, now)


def test_a_digest_a_stack_pins_is_never_expired():
    images, pinned, now = _history([reg.keep_tag("prod", "sha256:" + "a" * 64)])
    gone = expire(reg.LIFECYCLE, images, now)
    assert pinned not in gone
    assert "sha256:" + "f" * 64 in gone  # untagged still expire
    assert len([d for d in gone if images[d][1]]) == 250 - reg.KEEP_TAGGED  # of the 250 builds the newest 200 stay


def test_lifecycle_policy_is_what_ecr_accepts():
    rules = reg.LIFECYCLE["rules"]
    priorities = [r["rulePriority"] for r in rules]
    assert len(set(priorities)) == len(priorities)
    assert max(rules, key=lambda r: r["rulePriority"])["selection"]["tagStatus"] == "any"  # `any` last
    assert sum(r["selection"]["tagStatus"] == "untagged" for r in rules) == 1
    keep = min(rules, key=lambda r: r["rulePriority"])
    assert keep["selection"] == {
        "tagStatus": "tagged",
        "tagPrefixList": [reg.KEEP_PREFIX],
        "countType": "imageCountMoreThan",
        "countNumber": reg.KEEP_NEVER_REACHED,
    }
    assert all(r["action"] == {"type": "expire"} for r in rules)
    for r in rules:  # tagged rules need a filter; never both lists
        sel = r["selection"]
        assert (sel["tagStatus"] != "tagged") or (bool(sel.get("tagPrefixList")) != bool(sel.get("tagPatternList")))


def test_every_repository_gets_the_policy(plans):
    policies = plans["dev"].of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert policies and all(json.loads(p.inputs["policy"]) == reg.LIFECYCLE for p in policies)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_pinned_digest_has_a_keep_tag_rule_one_selects(stack):
    pinned = [ref for s in load_stack_yaml(stack)["config"]["platform:systems"].values() for ref in (s.get("images") or {}).values()]
    digests = [p for p in pinned if isinstance(p, str) and p.startswith("sha256:")]
    assert digests
    for digest in digests:
        tag = reg.keep_tag(stack, digest)
        assert tag.startswith(reg.KEEP_PREFIX) and len(tag) <= 128 and all(c.isalnum() or c in "._-" for c in tag)


def test_prod_state_unprotected_needs_the_acknowledgement(project):
    # The loader's prod-data rule covers the protected state like Postgres's deletion protection.
    from stacks.config import load_platform
    from stacks.errors import ConfigError

    def unprotect(c):
        c["platform:overrides"] = {"security": {"protect_state": False}}

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("prod", unprotect))
    assert "security.protect_state is off in a production preset" in err.value.problems[0].message

    def acknowledged(c):
        c["platform:overrides"] = {"security": {"protect_state": False}, "acknowledge_unprotected_data": True}

    assert load_platform("test", project("prod", acknowledged)).preset.security.protect_state is False
