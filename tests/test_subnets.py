"""Subnet math, without Pulumi."""

from ipaddress import IPv4Network

import pytest

from stacks.subnets import TIERS, check_explicit, plan_subnets


@pytest.mark.parametrize(("cidr", "azs"), [("10.0.0.0/16", 2), ("10.0.0.0/16", 3), ("10.0.0.0/16", 6), ("172.16.0.0/20", 3), ("10.0.0.0/22", 2)])
def test_plan_fits_and_never_overlaps(cidr, azs):
    vpc = IPv4Network(cidr)
    plan = plan_subnets(vpc, azs)
    nets = [n for t in TIERS for n in plan.tier(t)]
    assert len(nets) == 3 * azs
    assert all(n.subnet_of(vpc) for n in nets)
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    assert all(n.prefixlen <= 28 for n in nets)
    assert check_explicit(vpc, {t: list(plan.tier(t)) for t in TIERS}, azs) == []


def test_private_subnets_are_the_largest():
    plan = plan_subnets(IPv4Network("10.0.0.0/16"), 3)
    assert [str(n) for n in plan.private] == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    assert plan.public[0].prefixlen == 22 and plan.isolated[0].prefixlen == 22


def test_too_small_vpc_is_refused():
    with pytest.raises(ValueError, match="too small"):
        plan_subnets(IPv4Network("10.0.0.0/24"), 2)


def test_explicit_overlap_and_count_are_reported():
    vpc = IPv4Network("10.0.0.0/16")
    tiers = {
        "public": [IPv4Network("10.0.0.0/24"), IPv4Network("10.0.0.128/25")],
        "private": [IPv4Network("10.0.16.0/20")],
        "isolated": [IPv4Network("10.0.2.0/24"), IPv4Network("10.0.3.0/24")],
    }
    problems = dict(check_explicit(vpc, tiers, 2))
    assert "overlaps public[0]" in problems["public[1]"]
    assert "needs exactly 2 subnets" in problems["private"]
