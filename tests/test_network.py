"""The network component, as the real program declares it for each stack."""

from __future__ import annotations

from tests.conftest import plan

T = "aws:ec2/"


def test_dev_has_one_nat_and_prod_one_per_az(plans):
    assert len(plans["dev"].of_type(T + "natGateway:NatGateway")) == 1
    assert len(plans["staging"].of_type(T + "natGateway:NatGateway")) == 1
    prod_nats = plans["prod"].of_type(T + "natGateway:NatGateway")
    assert len(prod_nats) == 3
    subnets = {r.urn: r.inputs["availabilityZone"] for r in plans["prod"].of_type(T + "subnet:Subnet")}
    nat_azs = {subnets[r.property_dependencies["subnetId"][0]] for r in prod_nats}
    assert nat_azs == {"us-east-1a", "us-east-1b", "us-east-1c"}


def test_three_tiers_per_az_and_no_public_ip_on_launch(plans):
    for stack, azs in (("dev", 2), ("prod", 3)):
        subnets = plans[stack].of_type(T + "subnet:Subnet")
        assert len(subnets) == 3 * azs
        tiers = sorted(r.inputs["tags"]["platform:tier"] for r in subnets)
        assert tiers == sorted(["isolated", "private", "public"] * azs)
        assert all(r.inputs["mapPublicIpOnLaunch"] is False for r in subnets)


def test_isolated_subnets_have_no_route_out(plans):
    cap = plans["prod"]
    isolated_rt = cap.one(T + "routeTable:RouteTable", "network-isolated")
    routes = [r for r in cap.of_type(T + "route:Route") if isolated_rt.urn in r.dependencies]
    assert routes == []
    assert isolated_rt.inputs.get("routes", []) == []


def test_private_routes_go_through_nat_in_their_own_az_in_prod(plans):
    cap = plans["prod"]
    for az in ("us-east-1a", "us-east-1b", "us-east-1c"):
        route = cap.one(T + "route:Route", f"network-private-{az}-default")
        (nat_urn,) = route.property_dependencies["natGatewayId"]
        assert nat_urn.endswith(f"network-nat-{az}")


def test_default_security_group_is_stripped(plans):
    sg = plans["dev"].one(T + "defaultSecurityGroup:DefaultSecurityGroup")
    assert sg.inputs.get("ingress", []) == [] and sg.inputs.get("egress", []) == []


def test_s3_gateway_endpoint_on_private_and_isolated_route_tables(plans):
    ep = plans["prod"].one(T + "vpcEndpoint:VpcEndpoint")
    assert ep.inputs["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert ep.inputs["vpcEndpointType"] == "Gateway"
    assert len(ep.inputs["routeTableIds"]) == 4  # 3 private + 1 isolated


def test_flow_logs_with_retention_and_a_scoped_role(plans):
    for stack, retention, traffic in (("dev", 7, "REJECT"), ("prod", 365, "ALL")):
        cap = plans[stack]
        flow = cap.one(T + "flowLog:FlowLog")
        assert flow.inputs["trafficType"] == traffic
        group = cap.one("aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
        assert group.inputs["retentionInDays"] == retention
        policy = cap.one("aws:iam/rolePolicy:RolePolicy", "network-flow-logs")
        assert '"Resource": ["arn:aws:' in policy.inputs["policy"] and '"*"' not in policy.inputs["policy"]


def test_adopting_an_existing_vpc_creates_no_network_resource(project):
    def adopt(c):
        c["platform:network"] = {
            "existing": {
                "vpc_id": "vpc-0123456789abcdef0",
                "public_subnet_ids": ["subnet-0000000000000000a", "subnet-0000000000000000b"],
                "private_subnet_ids": ["subnet-0000000000000000c", "subnet-0000000000000000d"],
                "isolated_subnet_ids": ["subnet-0000000000000000e", "subnet-0000000000000000f"],
            }
        }

    cap = plan("test", project("dev", adopt))
    network = cap.one("platform:network:Network")
    assert cap.children_of(network.urn) == []
    assert all(r.inputs.get("vpcId") == "vpc-0123456789abcdef0" for r in cap.of_type(T + "securityGroup:SecurityGroup"))
    assert cap.outputs["vpc_id"] == "vpc-0123456789abcdef0"
    assert cap.outputs["private_subnet_ids"] == ["subnet-0000000000000000c", "subnet-0000000000000000d"]
