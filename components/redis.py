"""An ElastiCache Redis 7 replication group for one system, and its ``REDIS_URL``.

Children: ``aws:ec2/securityGroup:SecurityGroup`` (no rules; consumers add ingress),
``aws:elasticache/subnetGroup:SubnetGroup`` (isolated subnets), ``aws:elasticache/parameterGroup:ParameterGroup``
(the system's ``maxmemory-policy``), ``random:index/randomPassword:RandomPassword`` (AUTH token) and
``aws:elasticache/replicationGroup:ReplicationGroup``.

Cluster mode is disabled: ioredis and BullMQ talk to one primary endpoint. TLS in transit and an AUTH
token are always on; the token is letters and digits (ElastiCache allows 16-128 printable characters
without ``@``, ``"`` or ``/``; ours also needs no URL escaping). With two or more nodes the replica sits
in another AZ with automatic failover and Multi-AZ.

Durability: ElastiCache has no AOF for Redis 7; what we have is daily snapshots (RPO up to 24 hours for
a whole-cluster loss) and, in prod, a synchronous-enough replica in another AZ (RPO of seconds for a
node or AZ loss, failover in about a minute). With a DR region, :mod:`components.redis_export` adds a
snapshot exported to S3 and replicated there every two hours.

AUTH token rotation takes two ``pulumi up`` runs, both written in the stack file (README, "Rotating
the Redis AUTH token"): bumping ``rotate.REDIS_URL`` makes a new token and sends it with the ``ROTATE``
strategy (old and new both valid; ``REDIS_URL`` changes, so the services roll onto the new token);
then ``revoke.REDIS_URL`` set to the same number sends the same token with ``SET`` (only it stays
valid). The provider calls ModifyReplicationGroup with ``AuthToken`` and ``AuthTokenUpdateStrategy``
whenever either input changes, and reads neither back, so a third run changes nothing
(terraform-provider-aws internal/service/elasticache/replication_group.go, ``resourceReplicationGroupUpdate``:
``d.HasChanges("auth_token", "auth_token_update_strategy")``). AWS allows ``SET`` only after ``ROTATE``
(ElastiCache API, ModifyReplicationGroup ``AuthTokenUpdateStrategy``); a token that has never been
rotated stays under ``ROTATE``, which on its own changes nothing.

Cost note: cache.t4g.micro is about $12/month per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from stacks.presets import RedisPreset

PORT = 6379
ENGINE_VERSION = "7.1"


@dataclass(frozen=True, kw_only=True)
class RedisArgs:
    replication_group_id: str
    """``<system>-<env>``, at most 40 characters. Warning: changing it replaces the cache."""
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    kms_key_arn: pulumi.Input[str]
    settings: RedisPreset
    maxmemory_policy: str
    rotation: int = 0
    """Bump to generate a new AUTH token (step 1: the old one stays valid too)."""
    protect: bool = False
    """Pulumi ``protect`` on the replication group (preset ``security.protect_state``): a change that
    would replace it (``at_rest_encryption_enabled``, ``kms_key_id``, ``port``, ``subnet_group_name``, the id; terraform-provider-aws
    ``replication_group.go``, ForceNew) or a delete stops the update instead of dropping the data.
    Default: false."""
    revoked: int = 0
    """Step 2: the rotation whose token is the only valid one. Equal to ``rotation``: the older tokens
    are revoked (``SET``); lower: both stay valid (``ROTATE``). Default: 0 (nothing revoked)."""


def auth_token_update_strategy(rotation: int, revoked: int) -> str:
    """``SET`` once the current rotation is revoked-through, else ``ROTATE``.

    A bumped ``rotation`` with ``revoked`` left behind goes out with ``ROTATE``, so no running service
    loses its connection. Bumping both in one run would send a new token with ``SET``; a stack file
    cannot tell that from a proper step 2, so the README's procedure has the operator check the preview.
    """
    if revoked > rotation:
        raise ValueError(f"revoked ({revoked}) is ahead of rotation ({rotation}): only a token in use can become the only valid one")
    return "SET" if revoked and revoked == rotation else "ROTATE"


class Redis(pulumi.ComponentResource):
    """Redis 7, one shard, TLS and AUTH, encrypted at rest."""

    security_group_id: pulumi.Output[str]
    redis_url: pulumi.Output[str]
    """``rediss://:token@primary:6379``, a secret."""
    group: aws.elasticache.ReplicationGroup
    replication_group_id: str
    """``<system>-<env>``: what CloudWatch dimensions and snapshot APIs name the cache by."""
    port: int = PORT

    def __init__(self, name: str, args: RedisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:data:Redis", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        sg = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, description=f"Redis {args.replication_group_id}: ingress added per consuming service", egress=[], opts=child
        )
        subnets = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=args.replication_group_id,
            description=f"{args.replication_group_id} isolated subnets",
            subnet_ids=args.subnet_ids,
            opts=child,
        )
        params = aws.elasticache.ParameterGroup(
            f"{name}-params",
            name=args.replication_group_id,
            family="redis7",
            description=f"{args.replication_group_id}: maxmemory-policy {args.maxmemory_policy}",
            parameters=[aws.elasticache.ParameterGroupParameterArgs(name="maxmemory-policy", value=args.maxmemory_policy)],
            opts=child,
        )
        token = random.RandomPassword(f"{name}-auth", length=64, special=False, keepers={"rotation": str(args.rotation)}, opts=child)
        replicated = s.nodes > 1
        final_snapshot = None
        if s.final_snapshot:
            # Snapshot names are unique per account and region: a second delete that names an existing
            # snapshot fails (DeleteReplicationGroup: SnapshotAlreadyExistsFault) and leaves the group
            # up. Each incarnation of the group gets its own suffix, renewed with what replaces the
            # group (terraform-provider-aws replication_group.go: ForceNew on the id, kms_key_id,
            # subnet_group_name, port, at_rest_encryption_enabled).
            suffix = random.RandomId(
                f"{name}-final-id",
                byte_length=4,
                keepers={"group": args.replication_group_id, "kms": args.kms_key_arn, "subnets": args.replication_group_id, "port": str(PORT)},
                opts=child,
            )
            final_snapshot = pulumi.Output.concat(args.replication_group_id, "-final-", suffix.hex)
        self.group = aws.elasticache.ReplicationGroup(
            f"{name}-group",
            replication_group_id=args.replication_group_id,
            description=f"{args.replication_group_id} (cluster mode disabled)",
            engine="redis",
            engine_version=ENGINE_VERSION,
            node_type=s.node_type,
            num_cache_clusters=s.nodes,
            automatic_failover_enabled=replicated,
            multi_az_enabled=replicated,
            port=PORT,
            parameter_group_name=params.name,
            subnet_group_name=subnets.name,
            security_group_ids=[sg.id],
            at_rest_encryption_enabled=True,
            kms_key_id=args.kms_key_arn,
            transit_encryption_enabled=True,
            auth_token=token.result,
            auth_token_update_strategy=auth_token_update_strategy(args.rotation, args.revoked),
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=s.snapshot_retention_days,
            # A delete (a replacement included) first takes a manual snapshot, which is kept when the
            # automatic ones go with the group (ElastiCache DeleteReplicationGroup FinalSnapshotIdentifier).
            # The provider only keeps it in state and sends it on delete (terraform-provider-aws
            # replication_group.go: no ForceNew, not read back), so it never causes a diff of its own.
            final_snapshot_identifier=final_snapshot,
            snapshot_window="03:30-04:30",
            maintenance_window="sun:05:00-sun:06:00",
            apply_immediately=False,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, custom_timeouts=pulumi.CustomTimeouts(create="60m", update="80m", delete="60m")),
        )
        self.security_group_id = sg.id
        self.replication_group_id = args.replication_group_id
        self.redis_url = pulumi.Output.secret(
            pulumi.Output.all(self.group.primary_endpoint_address, token.result).apply(lambda v: f"rediss://:{v[1]}@{v[0]}:{PORT}")
        )
        self.register_outputs({"security_group_id": self.security_group_id})
