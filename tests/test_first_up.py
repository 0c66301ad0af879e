"""The first real `pulumi up` of a fresh stack: services whose external secrets have no value yet are
held at zero tasks instead of failing the deploy.

ECS cannot start a task whose secret has no current value ("ResourceInitializationError: unable to pull
secrets or registry auth"); the deployment circuit breaker then rolls back and `pulumi up` fails. A fresh
stack has no external value set, and every service reads at least SENTRY_DSN.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from stacks.catalog import SecretSource, load_catalog
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan, set_every_secret

SERVICE = "aws:ecs/service:Service"
TARGET = "aws:appautoscaling/target:Target"


def services(cap):
    return {r.name.removesuffix("-service"): r for r in cap.of_type(SERVICE)}


def test_a_fresh_stack_holds_every_service_that_lacks_a_secret(plans):
    # GIVEN the shipped dev stack: no external secret has a value
    dev = plans["dev"]
    # THEN every ECS service is created with no task and no autoscaling that could start one
    for name, svc in services(dev).items():
        assert svc.inputs["desiredCount"] == 0, name
    assert dev.of_type(TARGET) == []
    # AND the stack output lists each held service with what it lacks
    held = dev.outputs["held_services"]
    assert set(held) == set(services(dev))
    assert "secrets.offerhub.AIRTM_API_KEY" in held["offerhub-api"]
    assert "secrets.twinkle.PONDER_RPC_URL_11155111.indexer" in held["twinkle-indexer"]
    assert "twinkle-indexer" in held["twinkle-api"]  # it reads the schema the indexer creates


def test_the_preview_says_which_secrets_are_missing_and_how_to_set_each(plans):
    warnings = [line for line in plans["dev"].logs if line.startswith("warning:") and "runs no task until" in line]
    offerhub = next(w for w in warnings if w.startswith("warning: offerhub-api "))
    assert "`pulumi config set --secret --path 'secrets.offerhub.AIRTM_API_KEY' <value> --stack dev`" in offerhub
    assert "aws secretsmanager put-secret-value --secret-id dev/offerhub/AIRTM_API_KEY" in offerhub
    assert "platform:systems.offerhub.set_out_of_band" in offerhub
    assert len(warnings) == len(services(plans["dev"]))


def test_values_in_the_stack_file_or_set_out_of_band_release_the_services(project):
    # GIVEN dev with every external secret declared as put into Secrets Manager out of band
    cap = plan("test", project("dev", set_every_secret))
    # THEN every service runs its preset count, and nothing is held
    counts = {name: svc.inputs["desiredCount"] for name, svc in services(cap).items()}
    assert counts["darwin-app"] == 3 and counts["offerhub-api"] == 1 and counts["twinkle-indexer"] == 1
    assert cap.outputs["held_services"] == {}
    # AND the program never writes (so never overwrites) a value it was told is set out of band
    written = {r.name for r in cap.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    assert "offerhub-airtm-api-key" not in written


def test_a_service_is_held_until_what_it_waits_for_runs(project):
    # GIVEN twinkle with every secret set except the indexer's own RPC URL
    def all_but_indexer_rpc(c):
        set_every_secret(c)
        twinkle = c["platform:systems"]["twinkle"]
        twinkle["set_out_of_band"].remove("PONDER_RPC_URL_11155111.indexer")

    cfg = load_platform("test", project("dev", all_but_indexer_rpc))
    held = {svc.key: svc for svc in cfg.services() if svc.held}
    # THEN the indexer is held for its secret, and everything after it in twinkle's start order with it
    assert held["twinkle-indexer"].missing_secrets == ("secrets.twinkle.PONDER_RPC_URL_11155111.indexer",)
    assert held["twinkle-api"].waits_for_held == ("twinkle-indexer",)
    assert held["twinkle-worker"].waits_for_held == ("twinkle-facilitator",)
    assert set(held) == {"twinkle-indexer", "twinkle-api", "twinkle-facilitator", "twinkle-worker"}


def test_a_prod_service_released_later_is_raised_to_its_floor_by_its_scalable_target(prod):
    # GIVEN prod with its secrets set: autoscaled services ignore desiredCount (the autoscaler owns it),
    # so on release the scalable target's minimum is what raises the count (RegisterScalableTarget
    # brings capacity into [min, max] whenever it is called: Application Auto Scaling, "concepts").
    targets = {t.name.removesuffix("-scaling"): t.inputs for t in prod.of_type(TARGET)}
    assert targets["darwin-app"]["minCapacity"] == 3
    assert "desiredCount" in services(prod)["darwin-app"].options["ignoreChanges"]


@pytest.mark.parametrize(
    ("entries", "key", "message"),
    [
        (["NOPE"], "set_out_of_band[0]", "not an external secret of offerhub"),
        (["OFFERHUB_MASTER_KEY"], "set_out_of_band[0]", "not an external secret of offerhub"),
        (["SENTRY_DSN.api"], "set_out_of_band[0]", "one value for the whole system"),
    ],
)
def test_out_of_band_declarations_are_checked_against_the_catalog(project, entries, key, message):
    def mutate(c):
        c["platform:systems"]["offerhub"]["set_out_of_band"] = entries

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", mutate))
    (problem,) = err.value.problems
    assert problem.file == "Pulumi.test.yaml" and problem.key == f"platform:systems.offerhub.{key}"
    assert message in problem.message


def test_a_per_service_secret_is_declared_per_service(project):
    def mutate(c):
        c["platform:systems"]["twinkle"]["set_out_of_band"] = ["PONDER_RPC_URL_11155111"]

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", mutate))
    assert "write 'PONDER_RPC_URL_11155111.<service>'" in err.value.problems[0].message


def test_a_value_and_an_out_of_band_declaration_for_one_secret_are_refused(project):
    # Pulumi would write its value over the one set out of band.
    def mutate(c):
        c["platform:systems"]["offerhub"]["set_out_of_band"] = ["AIRTM_API_KEY"]
        c["platform:secrets"] = {"offerhub": {"AIRTM_API_KEY": {"secure": "AAABAC..."}}}

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", mutate))
    assert "keep one of the two" in err.value.problems[0].message


def test_shipped_stack_files_hold_no_ciphertext_the_cli_could_not_decrypt():
    # A `secure:` value is encrypted with the stack's own secrets provider; one copied from elsewhere
    # makes the real CLI fail before the program runs.
    for path in sorted(ROOT.glob("Pulumi.*.yaml")):
        text = path.read_text()
        assert not re.search(r"\bsecure\s*:", text), path.name
        assert "encryptionsalt" not in yaml.safe_load(text), path.name


def test_every_external_secret_can_be_declared_set(project):
    # The helper the steady-state fixtures use covers every external secret of every system.
    catalog = load_catalog()
    external = sum(
        len([s for s, svc in system.services.items() if name in svc.secrets]) if spec.per_service else 1
        for system in catalog.values()
        for name, spec in system.secrets.items()
        if spec.source is SecretSource.external
    )
    config: dict = {"platform:systems": {name: {} for name in catalog}}
    set_every_secret(config)
    assert sum(len(s["set_out_of_band"]) for s in config["platform:systems"].values()) == external
    assert json.dumps(config).count("PONDER_RPC_URL_11155111.") == 2


def test_the_database_roles_need_nothing_from_an_operator(plans):
    # GIVEN the shipped dev stack (a first `pulumi up`): the owner secret is one Pulumi writes itself,
    # so the bootstrap never waits for an operator, and every system with Postgres runs it exactly once
    dev = plans["dev"]
    written = {v.name for v in dev.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    assert {f"{s}-database-owner" for s in ("twinkle", "offerhub", "starkdca", "aurum", "darwin")} <= written
    runs = [t.name for t in dev.of_type("aws:ecs/taskDefinition:TaskDefinition") if '"name": "db-roles"' in t.inputs["containerDefinitions"]]
    assert sorted(runs) == ["aurum-api-task", "darwin-app-task", "offerhub-api-task", "starkdca-api-task", "twinkle-indexer-task"]
    # AND the owner's credentials are not a value anyone sets: no hold names them
    assert not [line for lines in dev.outputs["held_services"].values() for line in lines if "DATABASE_OWNER" in line]
