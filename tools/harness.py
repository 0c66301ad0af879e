"""Run the real program under Pulumi's mock runtime and capture every registration.

The capture happens at the engine boundary: a :class:`MockMonitor` subclass records each
``RegisterResourceRequest`` exactly as the SDK sends it (camelCase input keys, dependencies, property
dependencies, protect, ignoreChanges, custom timeouts ...). Secret values are replaced by
``"[secret]"`` at capture time, so a plan file or a test failure can never print one.

The mocks answer like AWS would for the few computed fields the program reads (ARNs, endpoints, DNS
names); everything else echoes the inputs. Data-source invokes are counted: each one is a cloud round
trip in a real preview.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from stacks.engine import from_files
from stacks.placeholders import offline_digest

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT = "platform"
ACCOUNT = "123456789012"
SECRET = "[secret]"
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def redact(value: Any) -> Any:
    """Replace secret-wrapped values with ``"[secret]"`` and resource references with their URN."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            return SECRET
        if sig == _RESOURCE_SIG:
            return value.get("urn")
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    options: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "inputs": self.inputs,
            "dependencies": self.dependencies,
            "propertyDependencies": self.property_dependencies,
            "options": self.options,
        }


@dataclass
class Capture:
    stack: str
    resources: list[Resource] = field(default_factory=list)
    invokes: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {type_} {name or ''}, found {[r.name for r in found]}")
        return found[0]

    @cached_property
    def _index(self) -> dict[str, Resource]:
        """URN -> resource; built on first use, after the run has registered everything."""
        return {r.urn: r for r in self.resources}

    def by_urn(self, urn: str) -> Resource:
        return self._index[urn]

    def top_component(self, urn: str) -> str:
        """The name of the component directly under the stack that owns ``urn``."""
        current = self._index.get(urn)
        while current is not None and current.parent in self._index:
            current = self._index[current.parent]
        return current.name if current else "?"

    def children_of(self, urn: str) -> list[Resource]:
        return [r for r in self.resources if r.parent == urn]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "resources": [r.to_json() for r in self.resources], "outputs": self.outputs, "invokes": self.invokes}


def _fake_id(type_: str, name: str) -> str:
    digest = hashlib.sha256(f"{type_}/{name}".encode()).hexdigest()
    prefixes = {
        "aws:ec2/vpc:Vpc": "vpc-",
        "aws:ec2/subnet:Subnet": "subnet-",
        "aws:ec2/securityGroup:SecurityGroup": "sg-",
        "aws:ec2/natGateway:NatGateway": "nat-",
        "aws:ec2/internetGateway:InternetGateway": "igw-",
        "aws:ec2/routeTable:RouteTable": "rtb-",
        "aws:ec2/eip:Eip": "eipalloc-",
    }
    if type_ in prefixes:
        return prefixes[type_] + digest[:17]
    return f"{name}-{digest[:8]}"


def _digest(args: pulumi.runtime.MockResourceArgs) -> str:
    return hashlib.sha256(f"{args.name}/{json.dumps(args.inputs, sort_keys=True, default=str)}".encode()).hexdigest()


class RecordingMocks(pulumi.runtime.Mocks):
    """Echo inputs plus the computed fields AWS would return."""

    def __init__(
        self, region: str, capture: Capture, registry: dict[str, list[dict[str, str]]] | None = None, stacks: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.region = region
        self.capture = capture
        self.registry = registry or {}
        """What ECR holds: repository name -> its images (``imageTag``, ``imageDigest``)."""
        self.stacks = stacks or {}
        """What a StackReference reads: stack name as referenced -> that stack's outputs."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        if args.typ == "pulumi:pulumi:StackReference":  # a read, as the engine answers it from the other stack's state
            name = str(args.resource_id or args.inputs.get("name"))
            return name, {"name": name, "outputs": self.stacks.get(name, {}), "secretOutputNames": []}
        state = dict(args.inputs)
        rid = args.resource_id or _fake_id(args.typ, args.name)
        service = args.typ.split(":")[1].split("/")[0]
        state.setdefault("arn", f"arn:aws:{service}:{self.region}:{ACCOUNT}:{args.typ.rsplit(':', 1)[-1].lower()}/{rid}")
        state.setdefault("id", rid)
        if "name" not in state and args.typ.startswith("aws:"):
            state["name"] = f"{args.name}-{rid[-7:]}"
        # Only the resource's own type is computed: this runs once per registration.
        computed = {
            "aws:kms/key:Key": lambda: {"keyId": rid},
            "aws:rds/instance:Instance": lambda: {"address": f"{args.inputs.get('identifier', rid)}.abc123.{self.region}.rds.amazonaws.com"},
            "aws:elasticache/replicationGroup:ReplicationGroup": lambda: {
                "primaryEndpointAddress": f"master.{args.inputs.get('replicationGroupId', rid)}.abc123.use1.cache.amazonaws.com"
            },
            # A new value whenever the inputs change (a bumped rotation keeper), as the provider would.
            "random:index/randomPassword:RandomPassword": lambda: {"result": "offline0password0" + _digest(args)[:8]},
            "random:index/randomId:RandomId": lambda: {"hex": _digest(args)[:8], "dec": str(int(_digest(args)[:8], 16))},
            "random:index/randomBytes:RandomBytes": lambda: {
                "base64": base64.b64encode(b"offline" + _digest(args)[:8].encode()).decode(),
                "hex": "6f66666c696e65" + _digest(args)[:8],
            },
            "aws:secretsmanager/secretVersion:SecretVersion": lambda: {"versionId": "v-" + hashlib.sha256(str(args.inputs).encode()).hexdigest()[:12]},
            "aws:lb/loadBalancer:LoadBalancer": lambda: {
                "dnsName": f"{args.name}-1234567890.{self.region}.elb.amazonaws.com",
                "zoneId": "Z35SXDOTRQ7X7K",
                "arnSuffix": f"app/{args.name}/{rid[-16:]}",
            },
            "aws:lb/targetGroup:TargetGroup": lambda: {"arnSuffix": f"targetgroup/{args.name}/{rid[-16:]}"},
            "aws:ecr/repository:Repository": lambda: {"repositoryUrl": f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{args.inputs.get('name', args.name)}"},
            "aws:acm/certificate:Certificate": lambda: {
                "domainValidationOptions": [
                    {
                        "domainName": n,
                        "resourceRecordName": f"_x{hashlib.sha256(n.removeprefix('*.').encode()).hexdigest()[:8]}.{n.removeprefix('*.')}.",
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": "_validation.acm-validations.aws.",
                    }
                    for n in [args.inputs.get("domainName", ""), *args.inputs.get("subjectAlternativeNames", [])]
                ]
            },
            "aws:route53/record:Record": lambda: {"fqdn": str(args.inputs.get("name", "")).rstrip(".")},
            "aws:s3/bucket:Bucket": lambda: {"bucket": args.inputs.get("bucket", f"{args.name}-{rid[-7:]}")},
        }
        state.update(computed.get(args.typ, dict)())
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        self.capture.invokes.append(args.token)
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/mock", "userId": "mock"}, []
        if args.token == "aws:ecr/getRepositories:getRepositories":
            return {"names": sorted(self.registry), "id": self.region}, []
        if args.token == "aws:ecr/getImages:getImages":
            name = args.args.get("repositoryName")
            if name not in self.registry:
                raise Exception(f"RepositoryNotFoundException: The repository with name '{name}' does not exist")
            return {"imageIds": self.registry[name], "repositoryName": name, "id": name}, []
        if args.token == "aws:elb/getServiceAccount:getServiceAccount":
            return {"arn": "arn:aws:iam::127311923021:root", "id": "127311923021"}, []
        if args.token == "aws:s3/getCanonicalUserId:getCanonicalUserId":
            return {"id": hashlib.sha256(ACCOUNT.encode()).hexdigest(), "displayName": "mock"}, []
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}, []
        return {}, []


class RecordingMonitor(pmocks.MockMonitor):
    """Records each RegisterResourceRequest as the engine would receive it."""

    def __init__(self, mocks: RecordingMocks, capture: Capture) -> None:
        super().__init__(mocks)
        self.capture = capture

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = redact(json_format.MessageToDict(request.object, preserving_proto_field_name=True))
        timeouts = request.customTimeouts
        self.capture.resources.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                inputs=inputs,
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                options={
                    "protect": bool(request.protect),
                    "ignoreChanges": list(request.ignoreChanges),
                    "retainOnDelete": bool(request.retainOnDelete),
                    "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                    "customTimeouts": {k: getattr(timeouts, k) for k in ("create", "update", "delete") if getattr(timeouts, k)},
                    "replaceOnChanges": list(request.replaceOnChanges),
                    "aliases": len(request.aliases) + len(request.aliasURNs),
                    "import": request.importId,
                    "provider": request.provider.rsplit("::", 1)[0],  # the provider's URN (the reference ends with its id)
                },
            )
        )
        return response


class _LogCollector:
    def __init__(self, capture: Capture) -> None:
        self.capture = capture

    def _log(self, level: str, msg: str) -> None:
        self.capture.logs.append(f"{level}: {msg}")

    def debug(self, msg, *a, **k):
        pass

    def info(self, msg, *a, **k):
        self._log("info", msg)

    def warning(self, msg, *a, **k):
        self._log("warning", msg)

    def error(self, msg, *a, **k):
        self._log("error", msg)


def engine_config(stack: str, project_dir: Path) -> tuple[dict[str, str], list[str]]:
    """What the engine would hand the program for this stack: ``Pulumi.yaml``'s defaults merged with the
    stack file, objects JSON-encoded, and the secret keys (:func:`stacks.engine.from_files`). Encrypted
    values cannot be decrypted offline; each becomes a placeholder, still marked secret."""
    cfg = from_files(stack, project_dir)
    return dict(cfg.values), sorted(cfg.secret_keys)


def pushed_images(values: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """An ECR registry holding every image of our repositories that the stack file names, as CI's
    pushes leave it: ``<system>/<image>`` -> its images. A tag points at a digest derived from it."""
    registry: dict[str, list[dict[str, str]]] = {}
    systems = json.loads(values.get(f"{PROJECT}:systems", "{}"))
    for system, dep in systems.items() if isinstance(systems, dict) else ():
        for image, ref in (dep.get("images") or {}).items() if isinstance(dep, dict) else ():
            if not isinstance(ref, str) or "/" in ref:
                continue  # another registry's image
            repo = f"{system}/{image}"
            if ref.startswith("sha256:"):
                registry.setdefault(repo, []).append({"imageDigest": ref, "imageTag": f"build-{ref[7:15]}"})
            else:
                registry.setdefault(repo, []).append({"imageDigest": offline_digest(repo, ref), "imageTag": ref})
    return registry


def core_of(values: dict[str, str]) -> str | None:
    """The core stack a system stack of the split layout names (``platform:layout.core``), as written."""
    try:
        layout = json.loads(values.get(f"{PROJECT}:layout", "null"))
    except ValueError:
        return None
    core = layout.get("core") if isinstance(layout, dict) else None
    return core if isinstance(core, str) else None


def referenced_stacks(values: dict[str, str], project_dir: Path) -> dict[str, dict[str, Any]]:
    """What the stack's StackReference reads offline: its core's outputs, from the core's own offline plan
    (``Pulumi.<core>.yaml`` beside it; ``org/platform/core-dev`` is ``core-dev``). Empty for other stacks."""
    core = core_of(values)
    if core is None or not (project_dir / f"Pulumi.{core.rsplit('/', 1)[-1]}.yaml").exists():
        return {}
    return {core: run(core.rsplit("/", 1)[-1], project_dir, stacks={}).outputs}


def run(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    program: Callable[[], Any] | None = None,
    registry: dict[str, list[dict[str, str]]] | None = None,
    config: tuple[dict[str, str], list[str]] | None = None,
    stacks: dict[str, dict[str, Any]] | None = None,
) -> Capture:
    """Run ``program`` (default: the project's ``__main__.py``) for ``stack`` and return the capture.

    ``registry``: what ECR holds; default: every image the stack file names is pushed (:func:`pushed_images`).
    ``config``: the engine's values and secret keys; default: :func:`engine_config` of the stack file.
    ``stacks``: what a StackReference reads (stack name -> outputs); default: a system stack of the split
    layout reads its core's offline plan (:func:`referenced_stacks`).
    Raises whatever the program raises (``pulumi.RunError`` for a configuration error).
    """
    values, secret_keys = config or engine_config(stack, project_dir)
    if stacks is None:
        stacks = referenced_stacks(values, project_dir)
    capture = Capture(stack=stack)
    region = values.get("aws:region", "us-east-1")
    # as the language host passes them: PULUMI_CONFIG and PULUMI_CONFIG_SECRET_KEYS (and the SDK's map)
    os.environ["PULUMI_CONFIG"] = json.dumps(values)
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(secret_keys)
    pulumi.runtime.set_all_config(values, secret_keys)
    os.environ.setdefault("AWS_REGION", region)
    mocks = RecordingMocks(region, capture, pushed_images(values) if registry is None else registry, stacks)
    monitor = RecordingMonitor(mocks, capture)
    pmocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor, logger=_LogCollector(capture))  # type: ignore[arg-type]
    from pulumi.runtime.settings import SETTINGS

    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    main = project_dir / "__main__.py"

    def default_program() -> None:
        sys.path.insert(0, str(project_dir))
        try:
            runpy.run_path(str(main), run_name="__main__")
        finally:
            sys.path.remove(str(project_dir))

    _sync_await(run_pulumi_func(program or default_program))
    capture.outputs = _resolve_outputs()
    return capture


def _resolve_outputs() -> dict[str, Any]:
    root = pulumi.runtime.settings.get_root_resource()
    out: dict[str, Any] = {}
    for name, value in (getattr(root, "outputs", None) or {}).items():
        output = pulumi.Output.from_input(value)
        secret = _sync_await(output.is_secret())
        resolved = _sync_await(output.future())
        out[name] = SECRET if secret else resolved
    return out
