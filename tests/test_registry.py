"""The registry across the life of dev: the first deploy of an empty account, images not pushed yet,
and a dev rebuilt next to the repositories it kept."""

from __future__ import annotations

import json

import pytest

from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import plan, set_every_secret

REPO = "aws:ecr/repository:Repository"
SERVICE = "aws:ecr/service:Service".replace("ecr/", "ecs/")


def services(cap):
    return {r.name.removesuffix("-service"): r for r in cap.of_type(SERVICE)}


def test_a_fresh_account_gets_everything_and_holds_what_has_no_image(project):
    # GIVEN dev with every secret set, in an account whose registry is empty (no repository yet)
    cap = plan("test", project("dev", set_every_secret), registry={})
    # THEN the whole stack is declared (no stack-wide first-run switch), repositories are created, not adopted
    repos = cap.of_type(REPO)
    assert len(repos) == 8 and all(r.options["import"] == "" for r in repos)
    assert cap.of_type("aws:rds/instance:Instance") and cap.of_type("aws:lb/loadBalancer:LoadBalancer")
    # AND every service waits at zero tasks for its image, with the push command
    assert all(s.inputs["desiredCount"] == 0 for s in services(cap).values())
    held = cap.outputs["held_services"]
    assert held["darwin-app"] == ["darwin/app:1.0.0"]
    warning = next(line for line in cap.logs if line.startswith("warning: darwin-app "))
    assert "`docker push <url>:1.0.0`" in warning and "repository_urls" in warning


def test_one_missing_image_holds_its_service_and_those_after_it(project):
    # GIVEN twinkle's indexer image not pushed yet, every other image there
    from tools.harness import engine_config, pushed_images

    project_dir = project("dev", set_every_secret)
    registry = pushed_images(engine_config("test", project_dir)[0])
    registry["twinkle/indexer"] = []
    cap = plan("test", project_dir, registry=registry)
    held = cap.outputs["held_services"]
    # THEN the indexer is held for its image, and twinkle's later services with it; nothing else
    assert held["twinkle-indexer"] == ["twinkle/indexer:1.0.0"]
    assert set(held) == {"twinkle-indexer", "twinkle-api", "twinkle-facilitator", "twinkle-worker"}
    assert services(cap)["offerhub-api"].inputs["desiredCount"] == 1
    # AND the held task definition names the tag it waits for (never started), the others a digest
    tasks = {r.name: json.loads(r.inputs["containerDefinitions"]) for r in cap.of_type("aws:ecs/taskDefinition:TaskDefinition")}
    indexer = next(c for c in tasks["twinkle-indexer-task"] if c["name"] == "indexer")
    assert indexer["image"].endswith("/twinkle/indexer:1.0.0")
    api = next(c for c in tasks["twinkle-api-task"] if c["name"] == "api")
    assert "@sha256:" in api["image"]


def test_a_rebuilt_dev_adopts_the_repositories_it_kept(plans):
    # GIVEN repositories that exist in the account (kept when dev was destroyed, or from the last up)
    repos = plans["dev"].of_type(REPO)
    # THEN each is imported by name instead of created again ("RepositoryAlreadyExistsException"); on a
    # stack that already holds it with that id, `import` is a no-op (pulumi developer docs, import.md)
    assert repos and all(r.options["import"] == r.inputs["name"] for r in repos)
    # AND their lifecycle and pull policies are kept with them, so other accounts keep pulling
    for kind in ("aws:ecr/lifecyclePolicy:LifecyclePolicy",):
        assert all(p.options["retainOnDelete"] for p in plans["dev"].of_type(kind))


def test_pull_accounts_may_resolve_and_list_images(project):
    cap = plan("test", project("dev", lambda c: c.update({"platform:registry": {"pull_accounts": ["210987654321"]}})))
    policies = cap.of_type("aws:ecr/repositoryPolicy:RepositoryPolicy")
    assert len(policies) == 8 and all(p.options["retainOnDelete"] for p in policies)
    actions = set(json.loads(policies[0].inputs["policy"])["Statement"][0]["Action"])
    assert {"ecr:BatchGetImage", "ecr:DescribeImages", "ecr:DescribeRepositories"} <= actions


def test_registry_only_is_refused_with_the_new_first_run(project):
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", lambda c: c.update({"platform:registry": {"only": True}})))
    (problem,) = err.value.problems
    assert problem.key == "platform:registry.only" and "holds each service whose image is not pushed yet" in problem.message
