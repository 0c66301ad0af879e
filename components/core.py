"""The split layout's seam: what a core stack exports and how a system stack reads it back.

A core stack (``platform:layout: {core: true}``) declares the environment's core exactly as an
all-in-one stack does (``components/platform.py``, ``_core``) and exports one plain object,
:data:`OUTPUT`, with every value a system needs: ARNs, ids, the load balancer's listeners, rule
priorities and URLs per web service. A system stack (``{system: <name>, core: <stack>}``) reads it
through a ``pulumi.StackReference`` and hands its components stand-ins with the same attributes as the
core's components (:class:`Key`, :class:`NetworkRef`, :class:`ClusterRef`, :class:`AlbRef`,
:class:`Topic`). No component learns which layout it is in: a service gets ``alb.listener_arn(key)``
from an :class:`~components.alb.Alb` in one layout and from an :class:`AlbRef` in the other, and the
value is the same string.

The export is read synchronously, before the system stack declares anything of its own
(``StackReference.get_output_details``, awaited with the SDK's own ``_sync_await`` as its synchronous
invokes are), so a system stack whose core lacks what it needs stops with one message naming the core
and the missing key instead of failing half-way. A real preview reads the core's last ``pulumi up``:
the core must have been updated once before its systems preview. Offline, ``tools.plan`` and the tests
answer the StackReference with the core's own offline plan (``tools/harness.py``).

An ephemeral environment (``layout.environment: pr-<n>``, a pull request's preview) runs on the dev
core, whose listeners belong to dev's services: each of its web services gets a listener of its own on
the core's load balancer, on a port of the core's HTTP range no core service holds, admitted from the
core's sources. That needs a core without a domain (dev's); with a domain the loader refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws
from pulumi.runtime.sync_await import _sync_await

from stacks import edge
from stacks.catalog import ServiceKind
from stacks.config import PlatformConfig

from .alb import _not_found, admit
from .observability import Topics
from .postgres import DrCopy
from .service import Telemetry

if TYPE_CHECKING:
    from .platform import Shared

OUTPUT = "platform_core"
"""The core stack's output a system stack reads."""
REFERENCE = "core"
"""The StackReference's resource name in a system stack."""


@dataclass(frozen=True)
class Key:
    arn: pulumi.Input[str]


@dataclass(frozen=True)
class Topic:
    arn: pulumi.Input[str]


@dataclass(frozen=True)
class NetworkRef:
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    private_subnet_ids: pulumi.Input[list[str]]
    isolated_subnet_ids: pulumi.Input[list[str]]


@dataclass(frozen=True)
class ClusterRef:
    arn: pulumi.Input[str]
    name: pulumi.Input[str]
    exec_log_group_arn: pulumi.Input[str] | None


@dataclass
class AlbRef:
    """The core's load balancer as a service sees it (the :class:`~components.alb.Alb` interface)."""

    security_group_id: str
    arn_suffix: str
    dns_name: str
    https: bool
    listeners: dict[str, str]
    priorities: dict[str, int]
    urls: dict[str, pulumi.Input[str]]
    infrastructure_role_arn: str | None = None
    infrastructure_ready: list[pulumi.Resource] = field(default_factory=list)

    def listener_arn(self, key: str) -> pulumi.Input[str]:
        return self.listeners[key]

    def priority(self, key: str) -> int:
        return self.priorities[key]

    def url(self, key: str) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self.urls[key])


def export(cfg: PlatformConfig, shared: Shared) -> dict[str, Any]:
    """The core's :data:`OUTPUT`: plain values and Outputs, no secret (a system stack's own secrets are its own)."""
    web = {index: sorted(svc.key for svc in services) for index, services in cfg.web_by_load_balancer().items()}
    out: dict[str, Any] = {
        "preset": cfg.preset_name,
        "environment": cfg.env,
        "region": cfg.region,
        "domain": cfg.domain or "",
        "systems": sorted(cfg.systems),
        "account_id": shared.account_id,
        "key_arn": shared.key.arn,
        "network": {
            "vpc_id": shared.network.vpc_id,
            "public_subnet_ids": shared.network.public_subnet_ids,
            "private_subnet_ids": shared.network.private_subnet_ids,
            "isolated_subnet_ids": shared.network.isolated_subnet_ids,
        },
        "cluster": {"arn": shared.cluster.arn, "name": shared.cluster.name, "exec_log_group_arn": shared.cluster.exec_log_group_arn}
        if shared.cluster is not None
        else None,
        "registry": {"account_id": cfg.stack_config.registry.account_id or shared.account_id, "registry_id": cfg.stack_config.registry.account_id},
        "topics": {"critical": shared.topic.arn, "warning": shared.warning.arn if shared.warning else shared.topic.arn},
        "route53_topics": {"critical": shared.route53_topics.critical, "warning": shared.route53_topics.warning} if shared.route53_topics else None,
        "telemetry": {
            "otlp_endpoint": shared.telemetry.otlp_endpoint,
            "auth_header": shared.telemetry.auth_header,
            "auth_secret_arn": shared.telemetry.auth_secret_arn,
        },
        "dr": {"region": shared.dr.region, "kms_key_arn": shared.dr.kms_key_arn, "retention_days": shared.dr.retention_days} if shared.dr else None,
        "load_balancer_of": {name: cfg.load_balancers.get(name, 1) for name in sorted(cfg.systems)},
        "load_balancers": {},
    }
    for index, alb in shared.albs.items():
        out["load_balancers"][str(index)] = {
            "security_group_id": alb.security_group_id,
            "arn": alb.lb.arn,
            "arn_suffix": alb.arn_suffix,
            "dns_name": alb.dns_name,
            "https": alb.https,
            "listeners": {key: alb.listener_arn(key) for key in web.get(index, [])},
            "priorities": {key: alb.priority(key) for key in web.get(index, [])},
            "urls": {key: alb.url(key) for key in web.get(index, [])},
            "http_ports": dict(alb.http_ports),
            "ingress_cidrs": edge.admitted(cfg.preset.edge),
            "infrastructure_role_arn": alb.infrastructure_role_arn,
        }
    return out


def load_balancer_of(core: dict[str, Any], system: str) -> dict[str, Any] | None:
    """The core's load balancer serving ``system`` (an ephemeral environment's system: the one its dev self uses)."""
    index = str(int((core.get("load_balancer_of") or {}).get(system, 1)))  # numbers come back as floats
    return (core.get("load_balancers") or {}).get(index)


@dataclass
class Core:
    """The core's export, read by a system stack."""

    data: dict[str, Any]
    stack: str
    reference: pulumi.StackReference | None = None
    """The StackReference it was read through (other outputs of the core are read through it too)."""

    @property
    def account_id(self) -> str:
        return self.data["account_id"]

    @property
    def key(self) -> Key:
        return Key(self.data["key_arn"])

    @property
    def network(self) -> NetworkRef:
        return NetworkRef(**self.data["network"])

    @property
    def cluster(self) -> ClusterRef | None:
        return ClusterRef(**self.data["cluster"]) if self.data.get("cluster") else None

    @property
    def registry_account_id(self) -> str:
        return self.data["registry"]["account_id"]

    @property
    def registry_id(self) -> str | None:
        return self.data["registry"].get("registry_id")

    @property
    def critical(self) -> Topic:
        return Topic(self.data["topics"]["critical"])

    @property
    def warning(self) -> Topic:
        return Topic(self.data["topics"]["warning"])

    @property
    def route53_topics(self) -> Topics | None:
        east = self.data.get("route53_topics")
        return Topics(east["critical"], east["warning"]) if east else None

    @property
    def telemetry(self) -> Telemetry:
        t = self.data.get("telemetry") or {}
        return Telemetry(otlp_endpoint=t.get("otlp_endpoint"), auth_header=t.get("auth_header") or "Authorization", auth_secret_arn=t.get("auth_secret_arn"))

    @property
    def dr(self) -> DrCopy | None:
        dr = self.data.get("dr")
        return DrCopy(region=dr["region"], kms_key_arn=dr["kms_key_arn"], retention_days=int(dr["retention_days"])) if dr else None

    def alb(self, cfg: PlatformConfig) -> AlbRef:
        """The load balancer for this system's web services; an ephemeral environment's get listeners of their own."""
        data = load_balancer_of(self.data, next(iter(cfg.systems)))
        assert data is not None  # problems_with refused a core without one
        ref = AlbRef(
            security_group_id=data["security_group_id"],
            arn_suffix=data["arn_suffix"],
            dns_name=data["dns_name"],
            https=bool(data["https"]),
            listeners=dict(data["listeners"]),
            priorities={k: int(v) for k, v in data["priorities"].items()},
            urls=dict(data["urls"]),
            infrastructure_role_arn=data.get("infrastructure_role_arn"),
        )
        if cfg.layout is not None and cfg.layout.environment:
            _own_listeners(cfg, data, ref)
        return ref


def read(cfg: PlatformConfig) -> Core:
    """The core's export, checked against this system stack; :class:`pulumi.RunError` naming what is missing."""
    assert cfg.core_stack is not None
    reference = pulumi.StackReference(REFERENCE, stack_name=cfg.core_stack)
    details = _sync_await(reference.get_output_details(OUTPUT))
    data = details.value if details.value is not None else details.secret_value
    if not isinstance(data, dict):
        raise pulumi.RunError(
            f"{cfg.file}: platform:layout.core: the stack '{cfg.core_stack}' has no output '{OUTPUT}'. Is it a core stack "
            "(platform:layout: {core: true}), and has it been updated once (`pulumi up` on it before its systems)?"
        )
    if problems := problems_with(cfg, data):
        raise pulumi.RunError("; ".join(f"{cfg.file}: {p}" for p in problems))
    return Core(data, cfg.core_stack, reference)


def problems_with(cfg: PlatformConfig, core: dict[str, Any]) -> list[str]:
    """What this system stack needs of its core and the core lacks, one sentence each."""
    name = cfg.core_stack
    out = []
    if core.get("preset") != cfg.preset_name:
        out.append(f"platform:preset: '{cfg.preset_name}', but the core '{name}' is a '{core.get('preset')}' core; a system runs on a core of its preset")
    if core.get("region") != cfg.region:
        out.append(f"aws:region: '{cfg.region}', but the core '{name}' is in '{core.get('region')}'")
    if (core.get("domain") or None) != cfg.domain:
        out.append(f"platform:domain: {cfg.domain or 'none'}, but the core '{name}' serves {core.get('domain') or 'no domain'}; give the core's")
    ephemeral = cfg.layout is not None and cfg.layout.environment
    for system in cfg.systems:
        if system not in core.get("systems", []) and not ephemeral:
            out.append(f"platform:systems.{system}: the core '{name}' does not serve it; add '{system}' to its platform:systems and `pulumi up` the core first")
    web = [svc.key for svc in cfg.services() if svc.spec.kind is ServiceKind.web]
    alb = load_balancer_of(core, next(iter(cfg.systems)))
    if web and alb is None:
        out.append(f"the core '{name}' has no load balancer for the web services {', '.join(web)}")
    elif web and not ephemeral:
        missing = [key for key in web if key not in alb.get("listeners", {})]
        if missing:
            out.append(f"the core '{name}' has no listener for {', '.join(missing)}; `pulumi up` the core after this system's hosts changed")
    if ephemeral and cfg.domain:
        out.append("platform:layout.environment: an ephemeral environment runs on a core without a domain (the dev core)")
    if cfg.stack_config.compute == "ecs" and not core.get("cluster"):
        out.append(f"the core '{name}' has no ECS cluster")
    return out


PREVIEW_EDGE = "platform:edge:PreviewEdge"
"""The component of an ephemeral environment's listeners and ingress rules on the core's load balancer
(the policy pack's ``world-ingress-only-on-alb`` admits the internet on the load balancer's children:
``policy/rules.py`` ``in_alb``)."""
PREVIEW_SLOTS = 10
"""Ports a preview environment block holds, at least: one per web service the core serves, so every
system of one pull request has its own."""


class PreviewEdge(pulumi.ComponentResource):
    """An ephemeral environment's web services on the core's load balancer: a listener each, and the
    security group rules that admit the core's sources on its port."""

    def __init__(self, name: str, cfg: PlatformConfig, data: dict[str, Any], ref: AlbRef) -> None:
        super().__init__(PREVIEW_EDGE, name)
        child = pulumi.ResourceOptions(parent=self)
        env = cfg.env
        taken = {int(p) for p in data.get("http_ports", {}).values()}
        served = sorted(data.get("listeners", {}))  # every web service of the core's systems, this one's among them
        web = sorted((s for s in cfg.services() if s.spec.kind is ServiceKind.web), key=lambda s: s.key)
        for svc in web:
            port = preview_port(env, svc.key, served, taken)
            admit(f"{svc.key}-preview-in", ref.security_group_id, port, data.get("ingress_cidrs") or [edge.WORLD_IPV4], f"{env} {svc.key}", child)
            listener = aws.lb.Listener(
                f"{svc.key}-preview-http", load_balancer_arn=data["arn"], port=port, protocol="HTTP", default_actions=[_not_found()], opts=child
            )
            ref.listeners[svc.key] = listener.arn
            ref.priorities[svc.key] = 1
            ref.urls[svc.key] = f"http://{data['dns_name']}:{port}"
        self.register_outputs({})


def _own_listeners(cfg: PlatformConfig, data: dict[str, Any], ref: AlbRef) -> None:
    """An ephemeral environment's web services: listeners of their own (:class:`PreviewEdge`)."""
    PreviewEdge(f"{cfg.env}-edge", cfg, data, ref)


def preview_port(env: str, key: str, served: list[str], core_ports: set[int]) -> int:
    """The port of web service ``key`` in the ephemeral environment ``pr-<n>``: pull request n's block of
    ``edge.HTTP_PORTS`` (the range the dev policy admits) holds ``max(PREVIEW_SLOTS, len(served))`` ports
    (block ``n mod`` the number of blocks); its ports the core's own listeners do not hold go, in order,
    to the core's web services ``served``, so the systems of one pull request never share a port and
    every stack of it computes the same. Pull requests a whole number of blocks apart (100 with up to
    10 web services) share ports: the later update fails with ELB's DuplicateListener, changing nothing
    else."""
    number = int(env.removeprefix("pr-"))
    names = sorted({*served, key})
    size = max(PREVIEW_SLOTS, len(names))
    slots = edge.HTTP_PORTS
    blocks = len(slots) // size
    for attempt in range(blocks):  # the next block when the core's ports leave too few free in this one
        first = ((number + attempt) % blocks) * size
        free = [slots[first + i] for i in range(size) if slots[first + i] not in core_ports]
        if len(free) >= len(names):
            return free[names.index(key)]
    raise ValueError("no free block of HTTP ports on the core's load balancer")
