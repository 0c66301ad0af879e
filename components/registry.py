"""ECR repositories for every image the catalog names, and the URI each service runs.

Children per image: ``aws:ecr/repository:Repository`` named ``<system>/<image>`` (immutable tags, scan
on push) and ``aws:ecr/lifecyclePolicy:LifecyclePolicy``; with ``pull_accounts`` an
``aws:ecr/repositoryPolicy:RepositoryPolicy`` lets those accounts pull.

One stack creates the repositories (``registry.create``, the dev stack in our files); the others pull
from them, so the digest that ran in dev is the very image staging and prod run, and promotion copies
nothing. Repositories are retained when the creating stack is destroyed: deleting dev must not delete
the images prod runs.

Each run lists the repositories of the account and the images in each (one data-source call per
repository): a tag resolves to its digest there, a service whose image is not pushed yet is held at zero
tasks (``stacks.config.hold_missing_images``), and a repository that exists but is not in the stack
(dev destroyed and re-created; repositories and their policies are retained on delete) is adopted with
``import`` instead of failing with "already exists".

Lifecycle (:data:`LIFECYCLE`): an image with a ``keep-`` tag is never expired; untagged images (pushes
replaced before they were tagged) expire after 14 days; of the rest the newest 200 are kept. ECR rules
select by tag, never by digest, so what a stack file pins is kept through a tag: the promote workflow
tags each digest it writes into ``Pulumi.<env>.yaml`` with :func:`keep_tag` (``keep-<env>-<digest hex>``,
a new tag on the same manifest: ``put-image``, allowed with immutable tags). Rule 1 selects those
images and never reaches its count, and "an image that matches the tagging requirements of a higher
priority rule cannot be expired by a rule with a lower priority" (Amazon ECR User Guide, "Lifecycle
policies", evaluation rules; the AWS CDK's ``addLifecycleRule({tagPrefixList: ['prod'], maxImageCount:
9999})`` example keeps images the same way). Rule 3 still counts them among the newest 200 but cannot
expire them. A rule with ``tagStatus: any`` must have the highest priority number (same guide,
"Lifecycle policy properties"), so it is last. Removing a ``keep-`` tag (``batch-delete-image`` with
that tag only removes the tag while the image has others) hands the image back to rule 3.

Resources: each repository carries ``system: <system>`` (its name's first part), so ECR storage is
split per system in Cost Explorer like the rest (:mod:`components.tags`); with ``protect`` (preset
``security.protect_state`` of the stack that creates them) the repositories are protected too.

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
KEEP_PREFIX = "keep-"
"""Images with a tag starting so are never expired: what a stack file pins (:func:`keep_tag`)."""
KEEP_NEVER_REACHED = 9999
"""Count of rule 1: more ``keep-`` images than this per repository is not expected (ECR holds at most
20,000 images per repository by default)."""

LIFECYCLE = {
    "rules": [
        {
            # selects every image a stack pins; lower-priority rules cannot expire an image this rule's
            # tag filter matches (Amazon ECR User Guide, "Lifecycle policies", evaluation rules)
            "rulePriority": 1,
            "description": f"never expire images a stack pins (tags {KEEP_PREFIX}<env>-...)",
            "selection": {"tagStatus": "tagged", "tagPrefixList": [KEEP_PREFIX], "countType": "imageCountMoreThan", "countNumber": KEEP_NEVER_REACHED},
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": f"expire untagged images after {UNTAGGED_DAYS} days",
            "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": UNTAGGED_DAYS},
            "action": {"type": "expire"},
        },
        {
            # `any` must come last (highest rulePriority)
            "rulePriority": 3,
            "description": f"keep the newest {KEEP_TAGGED} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_TAGGED},
            "action": {"type": "expire"},
        },
    ]
}


def keep_tag(env: str, digest: str) -> str:
    """The tag that keeps ``digest`` while ``Pulumi.<env>.yaml`` pins it: ``keep-prod-<64 hex>``
    (ECR tags: up to 128 of ``[a-zA-Z0-9._-]``; one per environment and digest, so an immutable
    repository never needs to move it)."""
    return f"{KEEP_PREFIX}{env}-{digest.removeprefix('sha256:')}"


@dataclass(frozen=True, kw_only=True)
class RegistryArgs:
    repositories: Sequence[str]
    """Repository names, ``<system>/<image>``. Warning: renaming one replaces it (images are kept, see above)."""
    create: bool
    account_id: pulumi.Input[str]
    """Account that owns the repositories (this one, or ``registry.account_id``)."""
    region: str
    registry_id: str | None = None
    """Another account's registry to read (``registry.account_id``); None: this account's."""
    pull_accounts: Sequence[str] = field(default_factory=list)
    protect: bool = False
    """Pulumi ``protect`` on the repositories this stack creates (preset ``security.protect_state``).
    They are retained on delete either way. Default: false."""


class Registry(pulumi.ComponentResource):
    """Our image repositories: created here or referenced by name."""

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:compute:Registry", name, None, opts)
        self._args = args
        self.urls: dict[str, pulumi.Output[str]] = {}
        """Repository name -> URL to push to (``docker push <url>:<tag>``)."""
        self._arns: dict[str, pulumi.Output[str]] = {}
        # What is in each repository now, read once per run (also in a preview): a service whose image is
        # not there yet is held at zero tasks instead of failing, and a tag resolves to its digest here.
        existing = set(aws.ecr.get_repositories().names) if args.create else set(args.repositories)
        self._pushed: dict[str, dict[str, str]] = {r: _image_ids(r, args.registry_id) if r in existing else {} for r in args.repositories}
        for repo_name in args.repositories:
            slug = repo_name.replace("/", "-")
            if args.create:
                # A repository kept from an earlier life of this stack (they are retained on delete) is
                # adopted, not created again ("already exists"): with `import`, a resource not in the
                # state is read from AWS; one already in the state with that id is left as it is
                # (pulumi/pulumi developer-docs/architecture/import.md). ECR's id is the name.
                repo = aws.ecr.Repository(
                    f"{name}-{slug}",
                    name=repo_name,
                    image_tag_mutability="IMMUTABLE",
                    image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                    encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
                    tags={"system": repo_name.split("/", 1)[0]},
                    opts=pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=True, import_=repo_name if repo_name in existing else None),
                )
                # kept with the repository: staging and prod in other accounts keep pulling while dev is
                # rebuilt; both are upserts (PutLifecyclePolicy, SetRepositoryPolicy), so a re-created dev
                # writes them again over the kept ones without an "already exists"
                kept = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
                aws.ecr.LifecyclePolicy(f"{name}-{slug}-lifecycle", repository=repo.name, policy=json.dumps(LIFECYCLE), opts=kept)
                if args.pull_accounts:
                    aws.ecr.RepositoryPolicy(f"{name}-{slug}-pull", repository=repo.name, policy=json.dumps(_pull_policy(args.pull_accounts)), opts=kept)
                self.urls[repo_name] = repo.repository_url
                self._arns[repo_name] = repo.arn
            else:
                account = pulumi.Output.from_input(args.account_id)
                self.urls[repo_name] = account.apply(lambda a, r=repo_name: f"{a}.dkr.ecr.{args.region}.amazonaws.com/{r}")
                self._arns[repo_name] = account.apply(lambda a, r=repo_name: f"arn:aws:ecr:{args.region}:{a}:repository/{r}")
        self.register_outputs({})

    def pushed(self, repository: str, ref: ImageRef) -> bool:
        """The image is in our repository now (always true for another registry's image)."""
        if ref.repository:
            return True
        ids = self._pushed.get(repository, {})
        return (ref.digest in ids.values()) if ref.digest else (ref.tag in ids)

    def digest(self, repository: str, ref: ImageRef) -> pulumi.Output[str]:
        """The digest that runs: as pinned, or the one our (immutable) tag points at, looked up in ECR
        once per image and tag. Promotion copies these digests to the next stack. Empty for an image
        from another registry pinned by tag."""
        if ref.digest:
            return pulumi.Output.from_input(ref.digest)
        if ref.repository or not ref.tag:
            return pulumi.Output.from_input("")
        return pulumi.Output.from_input(self._pushed.get(repository, {}).get(ref.tag, ""))

    def image_uri(self, repository: str, ref: ImageRef) -> pulumi.Output[str]:
        """What a task definition runs: ``<repository url>@sha256:...`` (a tag of ours is resolved to its
        digest, so a task definition always names exact bytes); a full reference as given."""
        if ref.repository:
            return pulumi.Output.from_input(str(ref))
        if not self.pushed(repository, ref):
            # a held service: registered, never started, until the image is pushed
            return self.urls[repository].apply(lambda url: f"{url}@{ref.digest}" if ref.digest else f"{url}:{ref.tag}")
        return pulumi.Output.all(self.urls[repository], self.digest(repository, ref)).apply(lambda v: f"{v[0]}@{v[1]}")

    def arns(self, repositories: Iterable[str]) -> list[pulumi.Output[str]]:
        """Repository ARNs to grant ``ecr:BatchGetImage`` on."""
        return [self._arns[r] for r in sorted(set(repositories))]


def _image_ids(repository: str, registry_id: pulumi.Input[str] | None) -> dict[str, str]:
    """Tag -> digest of every tagged image in ``repository``; untagged ones under their digest."""
    out: dict[str, str] = {}
    for image in aws.ecr.get_images(repository_name=repository, registry_id=registry_id).image_ids:
        out[image.image_tag or image.image_digest] = image.image_digest
    return out


def _pull_policy(accounts: Sequence[str]) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PullFromOtherEnvironments",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                # pull, and find what to pull: a stack in another account lists the images
                # (DescribeImages) to resolve a tag and to hold a service whose image is not pushed
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:DescribeImages",
                    "ecr:DescribeRepositories",
                    "ecr:ListImages",
                ],
            }
        ],
    }
