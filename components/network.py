"""The environment's network: one VPC, three subnet tiers per AZ, NAT, an S3 endpoint and flow logs.

Children (type tokens): ``aws:ec2/vpc:Vpc``, ``aws:ec2/subnet:Subnet`` (``public-<az>``,
``private-<az>``, ``isolated-<az>``), ``aws:ec2/internetGateway:InternetGateway``, ``aws:ec2/eip:Eip``
and ``aws:ec2/natGateway:NatGateway`` (one, or one per AZ), route tables and routes,
``aws:ec2/vpcEndpoint:VpcEndpoint`` (S3 gateway), ``aws:ec2/defaultSecurityGroup:DefaultSecurityGroup``
(stripped of every rule), and flow logs to CloudWatch (log group, role, ``aws:ec2/flowLog:FlowLog``).

Tiers: ``public`` holds only the ALB and the NAT gateways; ``private`` holds the tasks, which reach the
internet through NAT; ``isolated`` holds databases and caches and has no route out at all. No subnet
maps public IPs on launch: nothing we run needs one (the ALB and NAT use their own addresses).

With ``existing`` set, nothing is created: the component only exposes the given ids, so the rest of
the program is the same for an adopted VPC.

Cost note: each NAT gateway is about $33/month plus $0.045/GB; prod runs one per AZ so that losing an
AZ never cuts the others off. The S3 gateway endpoint is free and keeps ECR layer pulls off NAT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from stacks.config import ExistingVpc
from stacks.subnets import SubnetPlan

from .iam import service_trust


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    region: str
    """AWS region (names the S3 endpoint service)."""
    availability_zones: tuple[str, ...]
    """One subnet per tier in each of these AZs."""
    cidr: str = "10.0.0.0/16"
    """VPC CIDR. Warning: changing it replaces the VPC and everything in it."""
    subnets: SubnetPlan | None = None
    """Subnet CIDRs per tier, in AZ order. Required unless ``existing`` is set."""
    nat: Literal["single", "per_az"] = "single"
    """One NAT gateway, or one per AZ. Default: single."""
    flow_log_traffic: Literal["ALL", "REJECT"] = "REJECT"
    """Traffic recorded by VPC flow logs. Default: REJECT."""
    log_retention_days: int = 7
    """Flow log retention. Default: 7."""
    kms_key_arn: pulumi.Input[str] | None = None
    """Encrypts the flow log group. Default: CloudWatch's own encryption."""
    existing: ExistingVpc | None = None
    """Adopt this VPC instead of creating one. Default: create."""
    account_id: pulumi.Input[str] | None = None
    """Our account: scopes the S3 endpoint policy and the flow-log role's trust. Default: unscoped."""


class Network(pulumi.ComponentResource):
    """A VPC with public, private and isolated subnets across AZs."""

    vpc_id: pulumi.Output[str]
    """The VPC's id."""
    public_subnet_ids: pulumi.Output[list[str]]
    """Subnets for the ALB, one per AZ."""
    private_subnet_ids: pulumi.Output[list[str]]
    """Subnets for ECS tasks, one per AZ; egress through NAT."""
    isolated_subnet_ids: pulumi.Output[list[str]]
    """Subnets for RDS and ElastiCache, one per AZ; no route out."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:network:Network", name, None, opts)
        if args.existing is not None:
            self._adopt(args.existing)
        else:
            self._create(name, args)
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "isolated_subnet_ids": self.isolated_subnet_ids,
            }
        )

    def _adopt(self, existing: ExistingVpc) -> None:
        self.vpc_id = pulumi.Output.from_input(existing.vpc_id)
        self.public_subnet_ids = pulumi.Output.from_input(list(existing.public_subnet_ids))
        self.private_subnet_ids = pulumi.Output.from_input(list(existing.private_subnet_ids))
        self.isolated_subnet_ids = pulumi.Output.from_input(list(existing.isolated_subnet_ids))

    def _create(self, name: str, args: NetworkArgs) -> None:
        if args.subnets is None:
            raise ValueError("NetworkArgs.subnets is required when creating a VPC")
        child = pulumi.ResourceOptions(parent=self)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,  # RDS and ElastiCache endpoints are DNS names
            enable_dns_support=True,
            tags={"Name": name},
            opts=child,
        )
        # Adopting the default security group with no rules removes AWS's allow-all-within-group default
        # (Security Hub EC2.2); nothing we create uses it.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], tags={"Name": f"{name}-default-unused"}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": name}, opts=child)

        def subnet(tier: str, az: str, cidr: str) -> aws.ec2.Subnet:
            return aws.ec2.Subnet(
                f"{name}-{tier}-{az}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=az,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-{tier}-{az}", "platform:tier": tier},
                opts=child,
            )

        azs = args.availability_zones
        public = [subnet("public", az, str(c)) for az, c in zip(azs, args.subnets.public, strict=True)]
        private = [subnet("private", az, str(c)) for az, c in zip(azs, args.subnets.private, strict=True)]
        isolated = [subnet("isolated", az, str(c)) for az, c in zip(azs, args.subnets.isolated, strict=True)]

        public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, tags={"Name": f"{name}-public"}, opts=child)
        aws.ec2.Route(f"{name}-public-default", route_table_id=public_rt.id, destination_cidr_block="0.0.0.0/0", gateway_id=igw.id, opts=child)
        for az, sn in zip(azs, public, strict=True):
            aws.ec2.RouteTableAssociation(f"{name}-public-{az}", subnet_id=sn.id, route_table_id=public_rt.id, opts=child)

        nat_azs = azs if args.nat == "per_az" else azs[:1]
        nats = {}
        for az, sn in zip(azs, public, strict=True):
            if az not in nat_azs:
                continue
            eip = aws.ec2.Eip(f"{name}-nat-{az}", domain="vpc", tags={"Name": f"{name}-nat-{az}"}, opts=child)
            nats[az] = aws.ec2.NatGateway(
                f"{name}-nat-{az}",
                allocation_id=eip.id,
                subnet_id=sn.id,
                tags={"Name": f"{name}-nat-{az}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )

        route_tables = []
        for az, sn in zip(azs, private, strict=True):
            rt = aws.ec2.RouteTable(f"{name}-private-{az}", vpc_id=vpc.id, tags={"Name": f"{name}-private-{az}"}, opts=child)
            nat = nats.get(az) or nats[nat_azs[0]]
            aws.ec2.Route(f"{name}-private-{az}-default", route_table_id=rt.id, destination_cidr_block="0.0.0.0/0", nat_gateway_id=nat.id, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{az}", subnet_id=sn.id, route_table_id=rt.id, opts=child)
            route_tables.append(rt)

        isolated_rt = aws.ec2.RouteTable(f"{name}-isolated", vpc_id=vpc.id, tags={"Name": f"{name}-isolated"}, opts=child)
        for az, sn in zip(azs, isolated, strict=True):
            aws.ec2.RouteTableAssociation(f"{name}-isolated-{az}", subnet_id=sn.id, route_table_id=isolated_rt.id, opts=child)

        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in route_tables] + [isolated_rt.id],
            policy=s3_endpoint_policy(args.account_id, args.region) if args.account_id is not None else None,
            tags={"Name": f"{name}-s3"},
            opts=child,
        )

        self._flow_logs(name, vpc, args, child)

        self.vpc_id = vpc.id
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        self.isolated_subnet_ids = pulumi.Output.all(*[s.id for s in isolated])

    def _flow_logs(self, name: str, vpc: aws.ec2.Vpc, args: NetworkArgs, child: pulumi.ResourceOptions) -> None:
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            # VPC user guide, "IAM role for publishing flow logs to CloudWatch Logs": the trust policy
            # with aws:SourceAccount and aws:SourceArn arn:aws:ec2:<region>:<account>:vpc-flow-log/*
            assume_role_policy=service_trust(
                "vpc-flow-logs.amazonaws.com",
                source_account=args.account_id,
                source_arn=pulumi.Output.concat("arn:aws:ec2:", args.region, ":", args.account_id, ":vpc-flow-log/*") if args.account_id is not None else None,
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                                "Resource": [arn, f"{arn}:*"],
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type=args.flow_log_traffic,
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags={"Name": name},
            opts=child,
        )


OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:ListBucket",
    "s3:GetBucketLocation",
]
"""What code in the VPC may do to this account's buckets through the endpoint: read and write objects.
Bucket administration (policies, ACLs, public access blocks) goes through Pulumi from outside the VPC."""


def s3_endpoint_policy(account_id: pulumi.Input[str], region: str) -> pulumi.Output[str]:
    """The S3 gateway endpoint's policy: what traffic from the private and isolated subnets may reach
    through it. Only this account's buckets (``aws:ResourceAccount``, IAM "AWS global condition
    context keys"; a stolen credential of another account cannot be used to copy data out through the
    endpoint) and the ECR layer bucket, where image layers are downloaded from (ECR user guide,
    "Amazon ECR interface VPC endpoints": minimum S3 gateway endpoint policy
    ``arn:aws:s3:::prod-<region>-starport-layer-bucket/*``, ``s3:GetObject``), object operations only
    (:data:`OBJECT_ACTIONS`). The endpoint policy grants nothing: the caller's IAM policy and the
    bucket's policy still decide."""

    def document(account: str) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "OwnAccountBuckets",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": OBJECT_ACTIONS,
                        "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"],
                        "Condition": {"StringEquals": {"aws:ResourceAccount": account}},
                    },
                    {
                        "Sid": "EcrImageLayers",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::prod-{region}-starport-layer-bucket/*",
                    },
                ],
            }
        )

    return pulumi.Output.from_input(account_id).apply(document)
