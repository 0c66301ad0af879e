"""A system's secrets in Secrets Manager, from the catalog's declarations.

Children per secret: ``aws:secretsmanager/secret:Secret`` named ``<env>/<system>/<NAME>`` (per-service
external secrets: ``<env>/<system>/<service>/<NAME>``), encrypted with the environment key, and where we
own the value an ``aws:secretsmanager/secretVersion:SecretVersion``. Generated values come from
``random:index/randomBytes:RandomBytes`` (base64 or hex) or ``random:index/randomPassword:RandomPassword``.

Sources:

- generated: random, with the catalog's length and encoding; a new value when the stack file bumps the
  secret's rotation key.
- external: written when the stack file has a value (``pulumi config set --secret``). Without one, the
  secret is created empty and Pulumi never writes a version, so a value an operator puts there later
  (console, CLI) is never overwritten.
- derived: DATABASE_URL and REDIS_URL, composed by the Postgres and Redis components. With Postgres,
  two more that no catalog entry declares: ``<env>/<system>/DATABASE_OWNER`` (JSON: the owner's URL,
  host, password and the roles' SCRAM verifiers; read only by the ``db-roles`` bootstrap and the
  ``migrate`` container, never handed to an app container) and, for a system with a runtime-DDL
  service (Ponder), ``<env>/<system>/DATABASE_DDL_URL``, which that service receives as its
  ``DATABASE_URL`` (``components/postgres.py``, "Roles inside the database").

With a DR region every secret is replicated there (Secrets Manager keeps the replica in sync).

``arns_for(service)`` is exactly what that service may read: the services component builds its
least-privilege execution role and its ECS ``secrets`` from it. ``owner_arn`` is added only where the
bootstrap or the migration runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from stacks.catalog import SecretSource, System
from stacks.config import secret_config_path, secrets_manager_name


@dataclass(frozen=True, kw_only=True)
class DatabaseSecrets:
    """The values of the database's secrets that are not in the catalog (``components/postgres.py``)."""

    owner: pulumi.Output[str]
    """JSON: ``url``, ``host``, ``password``, ``app_verifier`` (and ``ddl_verifier``)."""
    ddl_url: pulumi.Output[str] | None = None
    """The runtime-DDL role's URL."""
    ddl_services: frozenset[str] = frozenset()
    """Services whose ``DATABASE_URL`` is ``ddl_url``."""


OWNER_SECRET = "DATABASE_OWNER"  # noqa: S105 - a secret's name
DDL_SECRET = "DATABASE_DDL_URL"  # noqa: S105 - a secret's name


@dataclass(frozen=True, kw_only=True)
class SystemSecretsArgs:
    env: str
    system: System
    kms_key_arn: pulumi.Input[str]
    recovery_window_days: int
    """0 deletes at once (dev); 7-30 keeps a deleted secret recoverable."""
    external_values: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    """Config path (``secrets.<system>.<NAME>[.<service>]``) -> value from the stack's encrypted config."""
    derived_values: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    """DATABASE_URL / REDIS_URL -> composed value."""
    database: DatabaseSecrets | None = None
    """The owner's and the runtime-DDL role's values, with Postgres. Default: none."""
    rotation: Mapping[str, int] = field(default_factory=dict)
    """Generated secret name -> rotation key; bumping it makes a new value."""
    replica_region: str | None = None
    """Replicate every secret to this region (disaster recovery). Default: none."""
    replica_kms_key_arn: pulumi.Input[str] | None = None
    """Key in ``replica_region`` that encrypts the replicas."""
    protect: bool = False
    """Pulumi ``protect`` on every secret (preset ``security.protect_state``): the secret holds values
    set out of band that exist nowhere else. Versions and generated values are not protected, so a
    rotation (a new value replaces the old one) still works. Default: false."""


class SystemSecrets(pulumi.ComponentResource):
    """Every secret one system declares."""

    def __init__(self, name: str, args: SystemSecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:security:SystemSecrets", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._args = args
        self._arns: dict[tuple[str, str | None], pulumi.Output[str]] = {}
        self._values: dict[tuple[str, str | None], pulumi.Output[str]] = {}
        self._version_resources: dict[tuple[str, str | None], aws.secretsmanager.SecretVersion] = {}
        self.versions: dict[tuple[str, str | None], pulumi.Output[str]] = {}
        """(NAME, service or None) -> version id of a generated or external value we wrote; changes with the
        value. Derived values are not tracked here: their version waits for the data store, and a service
        must not wait for that just to render its task definition. Their rotation keys roll the services."""
        system = args.system
        for secret_name, spec in system.secrets.items():
            users = [s for s, svc in system.services.items() if secret_name in svc.secrets]
            if spec.source is SecretSource.external and spec.per_service:
                for service in users:
                    path = secret_config_path(system.name, secret_name, service)
                    self._secret(secret_name, service, spec.description, args.external_values.get(path))
            elif spec.source is SecretSource.external:
                path = secret_config_path(system.name, secret_name)
                self._secret(secret_name, None, spec.description, args.external_values.get(path))
            elif spec.source is SecretSource.derived:
                self._secret(secret_name, None, f"composed from the {spec.derived_from} we provision", args.derived_values[secret_name], track=False)
            else:
                self._secret(secret_name, None, spec.description, self._generate(secret_name, spec.length or 32, spec.encoding or "alphanumeric"))
        db = args.database
        if db is not None:
            database = system.postgres.database if system.postgres else system.name
            self._secret(
                OWNER_SECRET,
                None,
                f"owner of {database} (RDS master): the db-roles bootstrap and migrations only, never an app container",
                db.owner,
                track=False,
            )
            if db.ddl_url is not None:
                self._secret(DDL_SECRET, None, f"runtime-DDL role of {database}: {', '.join(sorted(db.ddl_services))}", db.ddl_url, track=False)
        self.register_outputs({})

    def _generate(self, secret_name: str, length: int, encoding: str) -> pulumi.Output[str]:
        key = self._key(secret_name, None)
        keepers = {"rotation": str(self._args.rotation.get(secret_name, 0))}
        if encoding == "alphanumeric":
            return random.RandomPassword(f"{key}-value", length=length, special=False, keepers=keepers, opts=self._child).result
        raw = random.RandomBytes(f"{key}-value", length=length, keepers=keepers, opts=self._child)
        return pulumi.Output.secret(raw.base64 if encoding == "base64" else raw.hex)

    def _key(self, secret_name: str, service: str | None) -> str:
        slug = secret_name.lower().replace("_", "-")
        return f"{self._args.system.name}-{service}-{slug}" if service else f"{self._args.system.name}-{slug}"

    def _secret(self, secret_name: str, service: str | None, description: str, value: pulumi.Output[str] | None, track: bool = True) -> None:
        a = self._args
        path = self._secret_name(secret_name, service)
        key = self._key(secret_name, service)
        secret = aws.secretsmanager.Secret(
            key,
            name=path,
            description=description or f"{a.system.name} {secret_name}",
            kms_key_id=a.kms_key_arn,
            recovery_window_in_days=a.recovery_window_days,
            replicas=[aws.secretsmanager.SecretReplicaArgs(region=a.replica_region, kms_key_id=a.replica_kms_key_arn)] if a.replica_region else None,
            opts=pulumi.ResourceOptions(parent=self, protect=a.protect),
        )
        self._arns[(secret_name, service)] = secret.arn
        if value is not None:
            self._values[(secret_name, service)] = pulumi.Output.secret(value)
            version = aws.secretsmanager.SecretVersion(key, secret_id=secret.arn, secret_string=pulumi.Output.secret(value), opts=self._child)
            self._version_resources[(secret_name, service)] = version
            if track:
                self.versions[(secret_name, service)] = version.version_id

    def _secret_name(self, secret_name: str, service: str | None) -> str:
        return secrets_manager_name(self._args.env, self._args.system.name, secret_name, service)

    def _owner(self, secret_name: str, service: str) -> str | None:
        """The service the secret is stored for: ``service`` for a per-service secret, else None (the system's)."""
        return service if (secret_name, service) in self._arns else None

    def _key_for(self, secret_name: str, service: str) -> tuple[str, str | None]:
        """Where the value of env var ``secret_name`` of ``service`` is stored: a runtime-DDL service's
        ``DATABASE_URL`` is the DDL role's secret."""
        db = self._args.database
        if secret_name == "DATABASE_URL" and db is not None and db.ddl_url is not None and service in db.ddl_services:  # noqa: S105
            return (DDL_SECRET, None)
        return (secret_name, self._owner(secret_name, service))

    def arns_for(self, service: str) -> dict[str, pulumi.Output[str]]:
        """Env var name -> secret ARN, for exactly the secrets ``service`` declares."""
        return {n: self._arns[self._key_for(n, service)] for n in self._args.system.services[service].secrets}

    def names_for(self, service: str) -> dict[str, str]:
        """Env var name -> Secrets Manager name, for exactly the secrets ``service`` declares."""
        return {n: self._secret_name(*self._key_for(n, service)) for n in self._args.system.services[service].secrets}

    def values_for(self, service: str) -> dict[str, pulumi.Output[str]]:
        """Env var name -> value (a secret Output), for the secrets of ``service`` whose value Pulumi knows."""
        keys = {n: self._key_for(n, service) for n in self._args.system.services[service].secrets}
        return {n: self._values[key] for n, key in keys.items() if key in self._values}

    def version_resources_for(self, service: str) -> list[aws.secretsmanager.SecretVersion]:
        """The values we write that ``service`` reads: its ECS service waits for them, so a task never
        starts before the secret it reads has the value it expects."""
        keys = [self._key_for(n, service) for n in self._args.system.services[service].secrets]
        return [self._version_resources[k] for k in keys if k in self._version_resources]

    @property
    def owner_arn(self) -> pulumi.Output[str]:
        """ARN of the owner secret (JSON, :data:`components.postgres.OWNER_KEYS`): bootstrap and migration only."""
        return self._arns[(OWNER_SECRET, None)]

    @property
    def owner_revision(self) -> str:
        """Changes when the owner secret's values do (the rotation key of ``DATABASE_URL``)."""
        return f"DATABASE_OWNER@{self._args.rotation.get('DATABASE_URL', 0)}"

    @property
    def owner_name(self) -> str:
        return self._secret_name(OWNER_SECRET, None)

    @property
    def owner_value(self) -> pulumi.Output[str]:
        return self._values[(OWNER_SECRET, None)]

    @property
    def owner_version(self) -> aws.secretsmanager.SecretVersion:
        """The owner secret's value: whatever runs the bootstrap or the migration waits for it."""
        return self._version_resources[(OWNER_SECRET, None)]

    def versions_for(self, service: str) -> list[pulumi.Output[str]]:
        """What must roll ``service`` when it changes: version ids of the generated and external values it
        reads that we write, and the rotation keys of the derived ones."""
        out: list[pulumi.Output[str]] = []
        for secret_name in self._args.system.services[service].secrets:
            version = self.versions.get((secret_name, self._owner(secret_name, service)))
            if version is not None:
                out.append(version)
            elif self._args.system.secrets[secret_name].source is SecretSource.derived:
                out.append(pulumi.Output.from_input(f"{secret_name}@{self._args.rotation.get(secret_name, 0)}"))
        return out
