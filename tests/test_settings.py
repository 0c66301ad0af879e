"""App settings the guides require (issue 16, part 1): declared per system in the catalog, given by the
stack file, read here from the task definitions the plan declares."""

from __future__ import annotations

import json

import pulumi
import pytest

from components import platform
from components.service import EGRESS_BY_SECRET
from stacks.catalog import is_placeholder, load_catalog, url_with_key
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan, refused_real_up

TASK = "aws:ecs/taskDefinition:TaskDefinition"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
A = "0x" + "ab" * 20


def app(cap, key: str) -> dict:
    task = cap.one(TASK, f"{key}-task")
    return next(c for c in json.loads(task.inputs["containerDefinitions"]) if c["essential"])


def env_of(cap, key: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in app(cap, key)["environment"]}


def secrets_of(cap, key: str) -> set[str]:
    return {s["name"] for s in app(cap, key).get("secrets", [])}


def error_of(project_dir) -> str:
    with pytest.raises(ConfigError) as info:
        load_platform("test", project_dir)
    return str(info.value)


def test_every_declared_setting_reaches_exactly_its_services(plans):
    # GIVEN the catalog's settings WHEN dev is planned THEN each setting is in the environment of the
    # services that receive it (all the system's, or the ones it names) and of no other service
    catalog = load_catalog()
    cap = plans["dev"]
    cfg = load_platform("dev", ROOT)
    checked = 0
    for name, system in cfg.systems.items():
        for setting in catalog[name].settings:
            spec = catalog[name].settings[setting]
            if not spec.required and spec.default is None:
                continue  # optional and unset here (darwin's HELIUS_WEBHOOK_URL): nobody gets it
            receivers = set(catalog[name].setting_receivers(setting))
            for svc in system.services:
                assert (setting in env_of(cap, f"{name}-{svc}")) is (svc in receivers), (name, svc, setting)
                checked += 1
    assert checked >= 20


def test_aurum_chain_settings_by_environment(plans):
    # aurum's guide, "Blockchain Configuration": RPC_URL=https://sepolia.base.org, CHAIN_ID=84532;
    # "Contract Addresses": five addresses. Dev and staging take the guide's Sepolia values by default;
    # prod names its own chain (Base mainnet, 8453).
    dev, prod = env_of(plans["dev"], "aurum-api"), env_of(plans["prod"], "aurum-api")
    assert (dev["RPC_URL"], dev["CHAIN_ID"], dev["INDEXER_START_BLOCK"]) == ("https://sepolia.base.org", "84532", "0")
    assert (prod["RPC_URL"], prod["CHAIN_ID"]) == ("https://mainnet.base.org", "8453")
    addresses = {"CONDITIONAL_TOKENS_ADDRESS", "MARKET_FACTORY_ADDRESS", "AURUM_TOKEN_ADDRESS", "AURUM_ORACLE_ADDRESS", "FEE_COLLECTOR_ADDRESS"}
    for cap in plans.values():
        for key in ("aurum-api", "aurum-indexer"):
            assert addresses <= set(env_of(cap, key)), key


def test_a_missing_required_setting_is_refused_with_the_guides_meaning(project):
    # GIVEN dev without aurum's MarketFactory address
    project_dir = project("dev", lambda c: c["platform:systems"]["aurum"]["env"].pop("MARKET_FACTORY_ADDRESS"))
    message = error_of(project_dir)
    # THEN the key, what it is, and where it is declared are named
    assert "Pulumi.test.yaml: platform:systems.aurum.env.MARKET_FACTORY_ADDRESS: required: MarketFactory contract address" in message
    assert "stacks/apps/aurum.yaml settings.MARKET_FACTORY_ADDRESS" in message


def test_prod_has_no_default_chain(project):
    # the guide's values are Base Sepolia's: a prod stack that names no chain is refused, not sent to Sepolia
    project_dir = project("prod", lambda c: [c["platform:systems"]["aurum"]["env"].pop(k) for k in ("RPC_URL", "CHAIN_ID")])
    message = error_of(project_dir)
    assert "platform:systems.aurum.env.RPC_URL: required" in message and "platform:systems.aurum.env.CHAIN_ID: required" in message


@pytest.mark.parametrize(
    ("system", "setting", "value", "words"),
    [
        ("aurum", "CHAIN_ID", "base", "must match [0-9]+"),
        ("aurum", "MARKET_FACTORY_ADDRESS", "0x1234", "MarketFactory contract address"),
        ("starkdca", "CORS_ORIGIN", "*", "not '*'"),
        ("starkdca", "SMTP_PORT", "25", "587 (STARTTLS) or 465"),
        ("aurum", "RPC_URL", "https://base-mainnet.g.alchemy.com/v2/AbCdEf0123456789AbCdEf0123", "make it a secret"),
    ],
)
def test_a_bad_setting_value_is_refused(project, system, setting, value, words):
    project_dir = project("dev", lambda c: c["platform:systems"][system].setdefault("env", {}).update({setting: value}))
    message = error_of(project_dir)
    assert f"platform:systems.{system}.env.{setting}" in message and words in message
    if "alchemy" in value:
        assert "AbCdEf0123456789" not in message  # a key is never repeated back


def test_a_keyed_url_is_told_apart_from_a_public_one():
    assert url_with_key("https://eth-sepolia.g.alchemy.com/v2/abcDEF1234567890abcdef1234")
    assert url_with_key("https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef")
    assert url_with_key("https://rpc.example.com/?api-key=abc")
    assert not url_with_key("https://sepolia.base.org")
    assert not url_with_key("https://app.example.com/api/webhook/helius")
    assert not url_with_key("https://basescan.org/address/0x0DF0E3024350ea0992a7485aDbDE425a79983c09")


def test_placeholders_plan_offline_and_are_listed(plans, capsys):
    # GIVEN the shipped dev stack, which carries 'to-do:' values where the guides give none
    from tools import plan as plan_cli

    cfg = load_platform("dev", ROOT)
    todo = {f"{n} {s}" for n, system in cfg.systems.items() for s in system.placeholders}
    assert "aurum MARKET_FACTORY_ADDRESS" in todo and "twinkle START_BLOCK" in todo
    # THEN the offline plan runs and lists each one, with its command, before anything else
    assert plan_cli.main(["--stack", "dev"]) == 0
    out = capsys.readouterr().out
    head = out.split("held at zero tasks")[0]
    for item in todo:
        name, setting = item.split()
        assert f"  platform:systems.{name}.env.{setting}: a 'to-do:' placeholder: " in head
        assert f"--path 'platform:systems.{name}.env.{setting}' <value>" in head


def test_a_real_preview_warns_of_each_placeholder(monkeypatch):
    # GIVEN a real preview (not the mock runtime; a dry run)
    monkeypatch.setattr(platform, "offline", lambda: False)
    monkeypatch.setattr(pulumi.runtime, "is_dry_run", lambda: True)
    cap = plan("dev", ROOT)
    warned = [line for line in cap.logs if platform.PLACEHOLDER_WARNING in line]
    # THEN each placeholder is a warning and the rest of the preview runs
    assert any("platform:systems.aurum.env.MARKET_FACTORY_ADDRESS" in w for w in warned)
    assert len(warned) == 11 and cap.of_type(TASK)


def test_a_real_run_stops_on_placeholders_before_declaring_anything(monkeypatch):
    # GIVEN a real up of dev (not under the mock runtime)
    message, declared = refused_real_up(monkeypatch, "dev")
    # THEN it names every placeholder and declares no resource
    assert 'platform:systems.aurum.env.MARKET_FACTORY_ADDRESS: "to-do: address' in message
    assert 'platform:systems.twinkle.env.START_BLOCK: "to-do:' in message
    assert declared == []


def test_offline_is_true_under_the_mock_runtime(plans):
    assert platform.offline()


def test_placeholder_marker():
    assert is_placeholder("to-do: the address") and is_placeholder("TO-DO: x") and not is_placeholder("0xabc")


def test_starkdca_api_and_worker_share_secrets_and_settings(plans):
    # starkdca's guide, "Shared Docker Image": "The only difference is the start command"
    for cap in plans.values():
        api, worker = env_of(cap, "starkdca-api"), env_of(cap, "starkdca-worker")
        own = {"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "KEEP_ALIVE_TIMEOUT", "ENABLE_CRON"}
        assert {k: v for k, v in api.items() if k not in own} == {k: v for k, v in worker.items() if k not in own}
        assert api["ENABLE_CRON"] == "false" and "ENABLE_CRON" not in worker  # "Web: ENABLE_CRON=false; Worker: (default)"
        assert secrets_of(cap, "starkdca-api") == secrets_of(cap, "starkdca-worker")
        # a keyed Starknet RPC endpoint is a secret, never plain env
        assert "STARKNET_RPC_URL" in secrets_of(cap, "starkdca-worker") and "STARKNET_RPC_URL" not in worker


def test_smtp_port_is_one_the_tasks_egress_opens(plans):
    # cross-resource: SMTP_PORT in the task's env must be a port its security group lets out
    # (components/service.py EGRESS_BY_SECRET; a closed port fails every mail send with a timeout)
    opened_by_secret = {e.port for e in EGRESS_BY_SECRET["SMTP_PASS"]}
    cap = plans["prod"]
    for key in ("starkdca-api", "starkdca-worker"):
        port = int(env_of(cap, key)["SMTP_PORT"])
        assert port in opened_by_secret
        internet = {int(r.inputs["fromPort"]) for r in cap.of_type(EGRESS) if r.name.startswith(f"{key}-") and r.inputs.get("cidrIpv4") == "0.0.0.0/0"}
        assert port in internet, key
