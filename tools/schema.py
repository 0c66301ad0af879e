"""Generate the JSON schemas editors use to complete stack files and catalog entries.

    python -m tools.schema           # rewrite stacks/schema/*.json
    python -m tools.schema --check   # exit 1 if the checked-in files are stale

Stack files opt in with a first line ``# yaml-language-server: $schema=stacks/schema/stack-config.schema.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stacks.catalog import System
from stacks.config import PROJECT, StackConfig
from stacks.presets import Preset
from stacks.regions import AWS_REGIONS

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "stacks" / "schema"


def stack_schema() -> dict:
    """Schema of a whole ``Pulumi.<stack>.yaml``: our keys carry the ``platform:`` prefix."""
    inner = StackConfig.model_json_schema()
    defs = inner.pop("$defs", {})
    preset = Preset.model_json_schema()
    defs.update(preset.pop("$defs", {}))
    defs["Preset"] = preset
    props = {f"{PROJECT}:{name}": schema for name, schema in inner["properties"].items()}
    props[f"{PROJECT}:overrides"] = {"$ref": "#/$defs/Preset", "description": "Key-by-key overrides of the environment preset."}
    props[f"{PROJECT}:secrets"] = {
        "type": "object",
        "description": "External secrets per system; set each with `pulumi config set --secret --path 'secrets.<system>.<NAME>' <value>`.",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": {
                "anyOf": [{"$ref": "#/$defs/Secure"}, {"type": "object", "additionalProperties": {"$ref": "#/$defs/Secure"}}],
            },
        },
    }
    props["aws:region"] = {"type": "string", "description": "AWS region of the aws partition (botocore's list), e.g. us-east-1.", "enum": list(AWS_REGIONS)}
    defs["Secure"] = {"type": "object", "properties": {"secure": {"type": "string"}}, "required": ["secure"], "additionalProperties": False}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Pulumi stack file of the platform project",
        "type": "object",
        "properties": {
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
            "environment": {},
            "config": {
                "type": "object",
                "properties": props,
                "required": ["aws:region", f"{PROJECT}:systems"],
                "patternProperties": {r"^(?!platform:)[^:]+:.+$": {}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
        "$defs": defs,
    }


def catalog_schema() -> dict:
    schema = System.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def rendered() -> dict[str, str]:
    return {
        name: json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in (("stack-config.schema.json", stack_schema()), ("catalog.schema.json", catalog_schema()))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.schema")
    parser.add_argument("--check", action="store_true", help="fail if the checked-in schemas are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = SCHEMA_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale schema: {', '.join(stale)}; run `python -m tools.schema`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
