"""Placeholders cannot reach a real account (issue 20, part 3): the example stack files' example.com,
example zones and emails, the documentation's account and digests the offline harness made up are listed
by the offline plan and stop a real `pulumi up` before anything is declared."""

from __future__ import annotations

import pytest

from stacks import placeholders
from stacks.config import load_platform
from tests.conftest import ROOT, refused_real_up
from tools import harness


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("example.com", True),
        ("staging.example.com", True),
        ("oncall@example.com", True),
        ("https://api.example.org/x", True),
        ("svc.test", True),
        ("Z0PRODEXAMPLE", True),
        ("arn:aws:acm:us-east-1:123456789012:certificate/0e2b7f4c-1a2b-4c3d-9e8f-0123456789ab", True),
        ("to-do: the address", True),
        ("aurumlabs.io", False),
        ("platform-alerts@aurumlabs.io", False),
        ("Z04418292NZVY7RZ7ZC3A", False),
        ("myexample.com", False),  # only the reserved names themselves, not names that contain them
        ("arn:aws:acm:us-east-1:210987654321:certificate/0e2b7f4c-1a2b-4c3d-9e8f-0123456789ab", False),
    ],
)
def test_what_counts_as_a_placeholder(value, placeholder):
    assert (placeholders.why(value) is not None) is placeholder


def test_a_digest_made_up_from_a_tag_is_found_and_a_real_one_is_not():
    made_up = placeholders.offline_digest("twinkle/api", "1.0.0")
    config = {"platform:systems": {"twinkle": {"images": {"api": made_up, "worker": "sha256:" + "1" * 64}}}}
    found = placeholders.find(config, tags=["1.0.0"])
    assert [(k, v) for k, v, _ in found] == [("platform:systems.twinkle.images.api", made_up)]
    # the harness gives a tag the same digest: the two must not drift apart
    assert harness.pushed_images({"platform:systems": '{"twinkle": {"images": {"api": "1.0.0"}}}'})["twinkle/api"][0]["imageDigest"] == made_up


def test_prod_example_lists_its_example_domain_zone_emails_and_digests():
    cfg = load_platform("prod", ROOT)
    from stacks.config import placeholders as of_stack

    keys = {k for k, _, _ in of_stack(cfg, ROOT)}
    assert {"platform:domain", "platform:hosted_zone_id", "platform:alarm_emails[0]", "platform:alarm_emails[1]"} <= keys
    assert {f"platform:systems.{s}.images.{i}" for s, i in [("twinkle", "api"), ("offerhub", "api"), ("darwin", "app")]} <= keys


def test_a_real_up_of_prod_stops_naming_each_placeholder(monkeypatch):
    message, declared = refused_real_up(monkeypatch, "prod")
    assert "Pulumi.prod.yaml: platform:domain: 'example.com' is a name reserved for examples" in message
    assert "platform:hosted_zone_id: 'Z0PRODEXAMPLE' is an example value" in message
    assert "platform:systems.darwin.images.app: 'sha256:" in message and "the offline plan computed from a tag" in message
    assert declared == []
