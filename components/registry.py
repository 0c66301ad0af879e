"""ECR repositories for every image the catalog names, and the URI each service runs.

Children per image: ``aws:ecr/repository:Repository`` named ``<system>/<image>`` (immutable tags, scan
on push) and ``aws:ecr/lifecyclePolicy:LifecyclePolicy``; with ``pull_accounts`` an
``aws:ecr/repositoryPolicy:RepositoryPolicy`` lets those accounts pull.

One stack creates the repositories (``registry.create``, the dev stack in our files); the others pull
from them, so the digest that ran in dev is the very image staging and prod run, and promotion copies
nothing. Repositories are retained when the creating stack is destroyed: deleting dev must not delete
the images prod runs.

Lifecycle: untagged images (pushes replaced before they were tagged) expire after 14 days; of tagged
images the newest 200 are kept. Warning: an image older than the newest 200 that a stack still runs by
digest would be expired; keep promotion current or raise the count.

Cost note: $0.10 per GB-month of stored images; scans on push are free (basic scanning).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from stacks.config import ImageRef

KEEP_TAGGED = 200
UNTAGGED_DAYS = 14

LIFECYCLE = {
    "rules": [
        {
            "rulePriority": 1,
            "description": f"expire untagged images after {UNTAGGED_DAYS} days",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": UNTAGGED_DAYS},
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"keep the newest {KEEP_TAGGED} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_TAGGED},
            "action": {"type": "expire"},
        },
    ]
}


@dataclass(frozen=True, kw_only=True)
class RegistryArgs:
    repositories: Sequence[str]
    """Repository names, ``<system>/<image>``. Warning: renaming one replaces it (images are kept, see above)."""
    create: bool
    account_id: pulumi.Input[str]
    """Account that owns the repositories (this one, or ``registry.account_id``)."""
    region: str
    pull_accounts: Sequence[str] = field(default_factory=list)


class Registry(pulumi.ComponentResource):
    """Our image repositories: created here or referenced by name."""

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:compute:Registry", name, None, opts)
        self._args = args
        self.urls: dict[str, pulumi.Output[str]] = {}
        """Repository name -> URL to push to (``docker push <url>:<tag>``)."""
        self._arns: dict[str, pulumi.Output[str]] = {}
        self._names: dict[str, pulumi.Input[str]] = {}
        self._digests: dict[tuple[str, str], pulumi.Output[str]] = {}
        for repo_name in args.repositories:
            slug = repo_name.replace("/", "-")
            if args.create:
                repo = aws.ecr.Repository(
                    f"{name}-{slug}",
                    name=repo_name,
                    image_tag_mutability="IMMUTABLE",
                    image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                    encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
                )
                aws.ecr.LifecyclePolicy(
                    f"{name}-{slug}-lifecycle", repository=repo.name, policy=json.dumps(LIFECYCLE), opts=pulumi.ResourceOptions(parent=self)
                )
                if args.pull_accounts:
                    aws.ecr.RepositoryPolicy(
                        f"{name}-{slug}-pull",
                        repository=repo.name,
                        policy=json.dumps(_pull_policy(args.pull_accounts)),
                        opts=pulumi.ResourceOptions(parent=self),
                    )
                self.urls[repo_name] = repo.repository_url
                self._arns[repo_name] = repo.arn
                self._names[repo_name] = repo.name  # lookups wait for the repository
            else:
                account = pulumi.Output.from_input(args.account_id)
                self.urls[repo_name] = account.apply(lambda a, r=repo_name: f"{a}.dkr.ecr.{args.region}.amazonaws.com/{r}")
                self._arns[repo_name] = account.apply(lambda a, r=repo_name: f"arn:aws:ecr:{args.region}:{a}:repository/{r}")
                self._names[repo_name] = repo_name
        self.register_outputs({})

    def digest(self, repository: str, ref: ImageRef) -> pulumi.Output[str]:
        """The digest that runs: as pinned, or the one our (immutable) tag points at, looked up in ECR
        once per image and tag. Promotion copies these digests to the next stack. Empty for an image
        from another registry pinned by tag."""
        if ref.digest:
            return pulumi.Output.from_input(ref.digest)
        if ref.repository or not ref.tag:
            return pulumi.Output.from_input("")
        key = (repository, ref.tag)
        if key not in self._digests:
            registry_id = None if self._args.create else self._args.account_id
            image = aws.ecr.get_image_output(repository_name=self._names[repository], image_tag=ref.tag, registry_id=registry_id)
            self._digests[key] = image.image_digest
        return self._digests[key]

    def image_uri(self, repository: str, ref: ImageRef) -> pulumi.Output[str]:
        """What a task definition runs: ``<repository url>@sha256:...`` (a tag of ours is resolved to its
        digest, so a task definition always names exact bytes); a full reference as given."""
        if ref.repository:
            return pulumi.Output.from_input(str(ref))
        return pulumi.Output.all(self.urls[repository], self.digest(repository, ref)).apply(lambda v: f"{v[0]}@{v[1]}")

    def arns(self, repositories: Iterable[str]) -> list[pulumi.Output[str]]:
        """Repository ARNs to grant ``ecr:BatchGetImage`` on."""
        return [self._arns[r] for r in sorted(set(repositories))]


def _pull_policy(accounts: Sequence[str]) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PullFromOtherEnvironments",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            }
        ],
    }
