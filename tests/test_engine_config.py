"""Configuration comes from the engine: values from an ESC environment, ``--config-file`` or
``Pulumi.yaml`` reach the program and are validated exactly like the stack file's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from stacks.config import StackConfig, load_platform
from stacks.engine import EngineConfig, from_files
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan
from tools.harness import engine_config


def environment_only(tmp_path: Path, stack: str = "dev") -> Path:
    """A stack file that holds nothing but an ESC environment import (``pulumi config env init``)."""
    (tmp_path / f"Pulumi.{stack}.yaml").write_text("environment:\n  - platform/dev\n")
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


def test_a_stack_whose_values_come_from_an_environment_plans_the_same(tmp_path, plans):
    # GIVEN dev's values supplied by the engine (as an imported environment would), not by the file
    project_dir = environment_only(tmp_path)
    cap = plan("dev", project_dir, config=engine_config("dev", ROOT))
    # THEN the program declares exactly what the file-based dev stack declares
    before = {r.urn: r.inputs for r in plans["dev"].resources}
    after = {r.urn: r.inputs for r in cap.resources}
    assert before.keys() == after.keys() and before == after


def test_a_mistake_in_an_engine_value_is_refused_by_key_and_source(tmp_path):
    values, secret_keys = engine_config("dev", ROOT)
    values["platform:domain"] = "Not A Domain"
    engine = EngineConfig(values, frozenset(secret_keys), "Pulumi.dev.yaml", {})
    with pytest.raises(ConfigError) as err:
        load_platform("dev", environment_only(tmp_path), engine=engine)
    (problem,) = err.value.problems
    assert problem.key == "platform:domain" and "not a DNS domain" in problem.message
    assert problem.file == "the stack's environment or config file (Pulumi.dev.yaml does not set platform:domain)"


def test_a_mistake_in_the_stack_file_still_names_the_file(project):
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", lambda c: c.update({"platform:domain": "Not A Domain"})))
    assert err.value.problems[0].file == "Pulumi.test.yaml"


def test_a_secret_object_set_without_path_reaches_secrets_manager(tmp_path):
    # GIVEN `pulumi config set --secret platform:secrets '{"offerhub": {...}}'`: one ciphertext for the
    # whole object in the file; the engine decrypts it and passes the object, marked secret
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    data["config"]["platform:secrets"] = {"secure": "v1:AAAAAAAAAAAAAAAA"}
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(data))
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    values, secret_keys = engine_config("dev", tmp_path)
    values["platform:secrets"] = json.dumps({"offerhub": {"AIRTM_API_KEY": "key-from-the-object"}})
    cap = plan("dev", tmp_path, config=(values, secret_keys))
    # THEN the value is written to its secret (redacted in the capture), and offerhub lacks one secret fewer
    version = cap.one("aws:secretsmanager/secretVersion:SecretVersion", "offerhub-airtm-api-key")
    assert version.inputs["secretString"] == "[secret]"
    assert "secrets.offerhub.AIRTM_API_KEY" not in cap.outputs["held_services"]["offerhub-api"]
    assert "key-from-the-object" not in json.dumps([r.inputs for r in cap.resources])


def test_a_secret_the_engine_does_not_mark_secret_is_refused_wherever_it_came_from(tmp_path):
    # GIVEN secrets supplied in plain text by an environment (not under `fn::secret`)
    values, secret_keys = engine_config("dev", ROOT)
    values["platform:secrets"] = json.dumps({"offerhub": {"AIRTM_API_KEY": "sk-live-0000"}})
    engine = EngineConfig(values, frozenset(secret_keys), "Pulumi.dev.yaml", {})
    with pytest.raises(ConfigError) as err:
        load_platform("dev", environment_only(tmp_path), engine=engine)
    (problem,) = err.value.problems
    assert problem.key == "platform:secrets.offerhub.AIRTM_API_KEY"
    assert "pulumi config set --secret --path 'secrets.offerhub.AIRTM_API_KEY'" in problem.message
    assert "sk-live-0000" not in str(err.value)


def test_a_number_set_with_path_is_taken_as_its_digits(project):
    # `pulumi config set --path 'platform:systems.aurum.env.CHAIN_ID' 8453` stores an integer
    cfg = load_platform("test", project("dev", lambda c: c["platform:systems"]["aurum"]["env"].update(CHAIN_ID=8453)))
    assert cfg.systems["aurum"].services["api"].env["CHAIN_ID"] == "8453"


def test_a_float_or_boolean_where_text_is_expected_gets_the_type_string_hint(project):
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", lambda c: c["platform:systems"]["aurum"]["env"].update(RATE=1.10)))
    (problem,) = err.value.problems
    assert problem.key == "platform:systems.aurum.env" and "--type string" in problem.message


def test_pulumi_yaml_declares_what_the_cli_can_type_with_the_models_defaults():
    # The project file schema types config as string, integer, boolean or array only
    # (pulumi/pulumi sdk/go/common/workspace/project.json, simpleConfigType); structured keys
    # (systems, network, ...) are typed by stacks/schema/stack-config.schema.json instead.
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    fields = StackConfig.model_fields
    for key, decl in project["config"].items():
        assert decl["type"] in ("string", "integer", "boolean", "array"), key
        model_default = fields[key].default
        # "" is how the CLI says "not set" for a string; the model says None
        assert decl["default"] == model_default or (decl["default"] in ("", []) and model_default in (None, [])), key


def test_offline_config_is_what_the_cli_sends():
    cfg = from_files("dev", ROOT)
    assert cfg.values["platform:compute"] == "ecs"  # a Pulumi.yaml default, merged
    assert json.loads(cfg.values["platform:systems"])["aurum"]["images"] == {"api": "1.0.0"}  # objects JSON-encoded
    assert cfg.secret_keys == frozenset()  # the shipped files hold no ciphertext
