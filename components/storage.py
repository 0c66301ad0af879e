"""What every bucket of ours has: no public access, SSE-S3 encryption, an ownership rule, TLS only.

The access-log bucket (``alb.py``) and the Redis export buckets (``redis_export.py``) share these;
each adds its own lifecycle and policy statements.
"""

from __future__ import annotations

from typing import Literal

import pulumi
import pulumi_aws as aws


def lock_down(
    name: str,
    bucket: aws.s3.Bucket,
    opts: pulumi.ResourceOptions,
    *,
    ownership: Literal["BucketOwnerEnforced", "BucketOwnerPreferred"],
    region: str | None = None,
) -> aws.s3.BucketOwnershipControls:
    """Children ``<name>-private`` (public access block), ``<name>-owner`` and ``<name>-encryption``.

    SSE-S3 rather than KMS: ALB access logs and ElastiCache exports support only SSE-S3 on the target
    bucket. Returns the ownership controls, which an ACL must wait for.
    """
    aws.s3.BucketPublicAccessBlock(
        f"{name}-private",
        bucket=bucket.id,
        region=region,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=opts,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        region=region,
        rules=[
            aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"
                )
            )
        ],
        opts=opts,
    )
    return aws.s3.BucketOwnershipControls(
        f"{name}-owner", bucket=bucket.id, region=region, rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership=ownership), opts=opts
    )


def tls_only(bucket_arn: str) -> dict:
    """Bucket policy statement: refuse every request that is not over TLS."""
    return {
        "Sid": "TlsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
