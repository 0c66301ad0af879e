"""A private, encrypted RDS Postgres instance for one system, and its ``DATABASE_URL``.

Children: ``aws:ec2/securityGroup:SecurityGroup`` (no rules: each consuming service adds its own
ingress), ``aws:rds/subnetGroup:SubnetGroup`` (isolated subnets), ``aws:rds/parameterGroup:ParameterGroup``
(``rds.force_ssl=1``, slow-query logging, ``max_connections`` for the class),
``random:index/randomPassword:RandomPassword`` (master password; ``-app-password`` and, with a runtime-DDL
role, ``-ddl-password``) with ``random:index/randomBytes:RandomBytes`` SCRAM salts, one ``aws:cloudwatch/logGroup:LogGroup``
per exported log (``/aws/rds/instance/<identifier>/postgresql`` and ``.../upgrade``, created before the
instance), ``aws:rds/instance:Instance``, with enhanced monitoring an IAM role, and with a DR region
``aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication`` (created in that region),
and with an alarm topic ``aws:rds/eventSubscription:EventSubscription`` (:data:`EVENT_CATEGORIES`).

Keeping backups: where the preset takes a final snapshot (staging, prod), the instance also keeps its
automated backups when it is deleted (``delete_automated_backups=false``; the provider's default, true,
deletes them with the instance): point-in-time restore stays possible for the retention period after
a deletion, not only the final snapshot.

TLS that every client verifies. ``DATABASE_URL`` ends in ``?sslmode=require&sslaccept=strict&sslrootcert=``
:data:`RDS_CA_BUNDLE`, and every container that reads it also gets :func:`client_env`
(``NODE_EXTRA_CA_CERTS``). What each client makes of that query:

- node-postgres 8 (aurum, Ponder in twinkle's indexer, Prisma 7's ``@prisma/adapter-pg``):
  pg-connection-string's ``parse`` reads the ``sslrootcert`` file into ``ssl.ca`` and treats ``require``
  as ``verify-full`` (chain and host name checked against the RDS CA only; it prints a one-time
  "SECURITY WARNING" that ``require`` is an alias). When pg 9 adopts libpq's meaning of ``require``, the
  ``sslrootcert`` keeps it verifying (libpq: ``require`` with a root CA file behaves as ``verify-ca``).
  ``sslaccept`` is ignored (only known keys reach the startup packet). Source: brianc/node-postgres,
  packages/pg-connection-string/index.js (2.14.0) and packages/pg/lib/client.js ``getStartupConf``.
  ``sslcert`` would be a *client* certificate there, so it is never in the URL.
- Prisma's Rust engines (the Prisma 5 and 6 Client; ``prisma migrate deploy``, whose schema engine is
  still Rust in Prisma 7 and reads the URL from ``prisma.config.ts``): quaint knows ``sslmode``
  ``disable``/``prefer``/``require`` only (anything else, ``verify-full`` included, silently becomes
  ``prefer``, which goes on in plaintext when the answer to its TLS request is "no": tokio-postgres
  connect_tls.rs), and verifies the server only with ``sslaccept=strict`` (the default is
  ``accept_invalid_certs``); ``sslrootcert`` is discarded and ``sslcert`` is its CA file. Its trust
  store is native-tls on OpenSSL: ``SSL_CERT_FILE`` if set, else the system's CA file, so the image adds
  the RDS bundle to the OS trust store (``SSL_CERT_FILE`` would *replace* the system CAs for every
  OpenSSL user in the container). Source: prisma/prisma-engines quaint/src/connector/postgres/url.rs
  ``parse_query_params`` and native/mod.rs ``PostgreSql::new``; sfackler/rust-native-tls
  src/imp/openssl.rs and alexcrichton/openssl-probe src/lib.rs ``probe``.
- The image contract: the RDS global bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)
  at :data:`RDS_CA_BUNDLE`, readable by the app user (mode 0644), and the same certificates added to
  the OS trust store (``update-ca-certificates``). Without the file node-postgres fails at connect
  (ENOENT) and Prisma fails the handshake: no client falls back to an unverified connection.

Master password: a pulumi-random password (letters and digits only, so it is URL-safe without
escaping) kept in Pulumi state as a secret, composed into the owner's URL here and stored in Secrets
Manager by the secrets component (``DATABASE_URL`` carries the app role, below). We chose this over RDS-managed passwords
(``manage_master_user_password``) because the apps read one ``DATABASE_URL``: an RDS-managed secret
holds JSON with the password only and rotates on its own schedule, so a second process would have to
recompose the URL after every rotation and the services would not roll with it. The cost of our choice:
the password sits (encrypted) in Pulumi state, and rotation is explicit: bump the system's rotation key
for ``DATABASE_URL`` in the stack file and ``pulumi up`` (new password, new URL, services roll).

Roles inside the database (least privilege; README "Database roles"). Three kinds, per system:

- the **owner**: the RDS master user ``app`` (:data:`OWNER`; the name cannot change without replacing
  the instance). It owns the database and everything migrations create. Only the ``db-roles`` bootstrap
  and the ``migrate`` container connect as it (secret ``<env>/<system>/DATABASE_OWNER``, JSON); no app
  container ever receives it.
- the **app role** ``<database>_app`` (:func:`app_role`): LOGIN, CONNECT and TEMPORARY on the database,
  USAGE on the owner's schemas, SELECT/INSERT/UPDATE/DELETE on their tables and USAGE/SELECT on their
  sequences, now and (``ALTER DEFAULT PRIVILEGES FOR ROLE app``) for everything a later migration
  creates. No DDL, no TRUNCATE, no role or database attributes. ``DATABASE_URL`` carries it.
- the **runtime-DDL role** ``<database>_ddl`` (:func:`ddl_role`), only for systems with a service that
  creates its own schema and tables when it starts (Ponder: twinkle's indexer,
  :func:`runtime_ddl_services`): CONNECT, TEMPORARY and CREATE on the database (it creates its schemas
  and owns what it creates) and CREATE on ``public``; still no superuser, role or database rights. The
  app role gets USAGE on its schemas and SELECT on its tables (default privileges of that role): the API
  reads what the indexer writes, and cannot change it. That service's ``DATABASE_URL`` carries it.

The roles come to exist in an idempotent bootstrap, :func:`roles_sql`, run by ``psql`` from a pinned
official image (:data:`BOOTSTRAP_IMAGE`) in the ``db-roles`` container before ``migrate`` (ECS,
``components/service.py``) or as the migration Job's init container (Kubernetes). It takes an advisory
lock (tasks starting together run it one after the other), creates a missing role, sets its password,
grants, and commits in one transaction. The app passwords never reach the database, the bootstrap or a
log as text: the program computes their SCRAM-SHA-256 verifiers (:func:`scram_verifier`, RFC 5802/7677,
the form ``ALTER ROLE ... PASSWORD`` stores as-is) and the bootstrap reads them from its environment
(``\\getenv``, psql 15+), filled by ECS ``secrets`` (``valueFrom``). Its connection: ``PGPASSWORD`` from
the same secret; TLS required and SCRAM channel binding required (``PGCHANNELBINDING=require``, libpq
13+): the official image has no RDS CA, and channel binding ties the SCRAM exchange to the TLS channel,
so a man in the middle can neither complete the login nor relay it (RFC 5929 ``tls-server-end-point``;
PostgreSQL docs, "SASL Authentication"). The parameter group sets ``password_encryption=scram-sha-256``
so every password RDS stores for the master is a SCRAM verifier (channel binding needs one).

Rotation: the system's rotation key for ``DATABASE_URL`` renews both passwords (master and app role,
and the DDL role's), as it renewed the master password before: new secrets, every database service rolls,
and each new task's bootstrap sets the new verifiers before its app starts.

A shared instance (preset ``data.shared``, components/shared_data.py): the same component with no
``database`` of its own (``db_name`` unset: RDS creates only ``postgres``, which it creates in every
PostgreSQL instance; API reference, CreateDBInstance ``DBName``), and per system a database and the
roles above, created by that system's own bootstrap (:func:`shared_roles_sql`): connected to
:data:`MAINTENANCE_DATABASE`, it creates the database if missing, outside any transaction
(PostgreSQL docs, CREATE DATABASE: "cannot be executed inside a transaction block"; psql's ``\\gexec``
runs the ``CREATE`` only when the ``SELECT ... WHERE NOT EXISTS`` returns a row, PostgreSQL docs,
psql), takes CONNECT and TEMPORARY away from ``PUBLIC`` (which every new database grants them by
default; PostgreSQL docs, "Privileges", the privileges PUBLIC gets by default), so only its own roles
and the owner connect, then connects to it (``\\connect``) and
runs :func:`roles_sql` in one transaction. The master user may create databases (RDS user guide,
"Understanding the rds_superuser role": ``CREATEDB CREATEROLE``). It owns every database of the
instance: its password, in each system's owner secret, reaches them all (the isolation a shared dev
gives up).

Cost note: db.t4g.micro single-AZ is about $12/month plus $0.115/GB-month of gp3; Multi-AZ doubles both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from stacks.catalog import System
from stacks.presets import LogsPreset, PostgresPreset, postgres_max_connections

from .iam import service_trust

PORT = 5432
RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"
"""Where the image bakes the RDS global CA bundle (global-bundle.pem from the RDS trust store)."""
LOG_EXPORTS = ("postgresql", "upgrade")
"""Logs the instance publishes to CloudWatch Logs, each into ``/aws/rds/instance/<identifier>/<log>``."""
TLS_QUERY = f"sslmode=require&sslaccept=strict&sslrootcert={RDS_CA_BUNDLE}"
"""The query of ``DATABASE_URL``: encrypted and verified by node-postgres and by Prisma (module docstring)."""
OWNER = "app"
"""The RDS master user: owner of the database and of what migrations create. Immutable (a new name replaces the instance)."""
EVENT_CATEGORIES = ("availability", "backup", "failover", "failure", "low storage", "maintenance")
"""RDS event categories of a DB instance sent to the alarm topic (RDS user guide, "Amazon RDS event
categories and event messages", DB instance events): failover (RDS-EVENT-0013/0015/0049...), low storage
(0007 storage consumed, 0089 over 90 %), availability (0221/0222 storage-full shutdown, restarts),
maintenance (0026/0027 offline maintenance, 0047 patched, 0155 minor upgrade required), failure (0031
failed instance, 0079/0080 enhanced monitoring, 0223/0224 storage autoscaling failed) and backup (the
category backup problems are reported in; RDS filters by category only, so its routine "backing up" and
"finished backup" notices, 0001/0002, come along, about two a day per instance)."""

BOOTSTRAP_CONTAINER = "db-roles"
BOOTSTRAP_IMAGE = "public.ecr.aws/docker/library/postgres:17.9-alpine@sha256:c7526c0f6c3f30260a563d7bcf8ad778effac59a44f8ffa86678c35418338609"
"""The official postgres image (Docker Official Images, mirrored on ECR Public), pinned by the digest of
its multi-architecture index; only its ``psql`` 17 runs. Bump deliberately: ``docker buildx imagetools
inspect postgres:17-alpine`` gives the digest."""
BOOTSTRAP_USER = "70:70"
"""The image's own ``postgres`` user (Alpine variant): never root."""
BOOTSTRAP_COMMAND = (
    "sh",
    "-c",
    "printf '%s\\n' \"$DB_ROLES_SQL\" | psql --no-psqlrc --no-password --set=ON_ERROR_STOP=1 --single-transaction --quiet --file=-",
)
"""The script comes from the environment (no file on the read-only root); psql's exit status is the
pipeline's: 0 when every statement ran and the transaction committed, 3 when one failed (rolled back)."""
SHARED_BOOTSTRAP_COMMAND = (
    "sh",
    "-c",
    "printf '%s\\n' \"$DB_ROLES_SQL\" | psql --no-psqlrc --no-password --set=ON_ERROR_STOP=1 --quiet --file=-",
)
"""On a shared instance: no ``--single-transaction`` (``CREATE DATABASE`` cannot run inside one); the
script opens and commits its own transaction around the roles (:func:`shared_roles_sql`), and a failed
statement ends psql with status 3 before the ``COMMIT`` (the open transaction dies with the session)."""
MAINTENANCE_DATABASE = "postgres"
"""The database a shared instance's bootstrap connects to first: initdb creates it in every PostgreSQL
cluster, and RDS with it (RDS API reference, CreateDBInstance ``DBName``, whose Aurora PostgreSQL entry
reads "A database named postgres is always created"; RDS for PostgreSQL instances have it too)."""
VERIFIER_ITERATIONS = 4096
"""PostgreSQL's ``scram_iterations`` default."""


def client_env() -> dict[str, str]:
    """Plain environment every container that reads ``DATABASE_URL`` needs (app and migration alike).

    ``NODE_EXTRA_CA_CERTS`` adds the RDS CAs to Node's own store, read once at process start: a Node
    client that verifies TLS from ``sslmode`` alone (not from ``sslrootcert``) then accepts RDS too.
    Prisma's engine needs no variable: it reads the OS trust store the image extends.
    """
    return {"NODE_EXTRA_CA_CERTS": RDS_CA_BUNDLE}


def _role(database: str, suffix: str) -> str:
    return f"{database[: 63 - len(suffix)]}{suffix}"  # identifiers are at most 63 bytes (NAMEDATALEN - 1)


def app_role(database: str) -> str:
    """The application role of ``database``: DML only."""
    return _role(database, "_app")


def ddl_role(database: str) -> str:
    """The role of a service that creates its own schema at run time (Ponder)."""
    return _role(database, "_ddl")


def runtime_ddl_services(system: System) -> tuple[str, ...]:
    """Services that create their own schema and tables when they start, so need DDL rights at run time:
    the catalog's ``postgres.runtime_ddl`` (twinkle's indexer: Ponder creates its schema, tables, indexes
    and reorg triggers itself and has no separate migration step). Named, not guessed: twinkle's
    facilitator reads the same Ponder RPC secret and DATABASE_URL but only reads and writes rows."""
    return tuple(system.postgres.runtime_ddl) if system.postgres else ()


def bootstrap_service(system: System, deployed: Sequence[str] | None = None) -> str | None:
    """The service whose tasks run the ``db-roles`` bootstrap: the migration's service (the bootstrap runs
    right before the migration), else the first in start order that reads ``DATABASE_URL``. ``deployed``:
    the services this stack runs (default: all)."""
    if system.postgres is None:
        return None
    names = set(system.services if deployed is None else deployed)
    if system.migration is not None and system.migration.service in names:
        return system.migration.service
    readers = [n for n in names if "DATABASE_URL" in system.services[n].secrets]
    return min(readers, key=lambda n: (system.start_rank(n), n)) if readers else None


def scram_verifier(password: str, salt: bytes, iterations: int = VERIFIER_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (``pg_authid.rolpassword``).

    RFC 5802 section 3 with SHA-256 (RFC 7677): SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i),
    StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key");
    written as PostgreSQL's ``scram_build_secret`` does. The password is letters and digits, which
    SASLprep leaves as they are. ``ALTER ROLE ... PASSWORD`` stores a string of this form unchanged.
    """
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[:1].isalpha() or name != name.lower():
        raise ValueError(f"not a plain lower-case identifier: {name!r}")
    return f'"{name}"'


def _literal(name: str) -> str:
    _ident(name)
    return f"'{name}'"


def roles_sql(database: str, *, ddl: bool) -> str:
    """The bootstrap, run by the owner with ``psql --single-transaction``: idempotent, and safe to run
    from several tasks at once (one advisory lock per database, held until the commit).

    It reads the verifiers from ``DB_APP_VERIFIER`` (and ``DB_DDL_VERIFIER``) with ``\\getenv``; an unset
    one leaves ``:'var'`` in the text, a syntax error, so the script fails before anything commits.
    """
    app = app_role(database)
    db, ra, la = _ident(database), _ident(app), _literal(app)
    lines = [
        f"-- db-roles: the roles of {database}, run by the owner; every statement is idempotent",
        f"SELECT pg_advisory_xact_lock(hashtext('platform:db-roles:{database}')) AS locked \\gset",
        "\\getenv app_verifier DB_APP_VERIFIER",
        f"SELECT format('CREATE ROLE %I', {la}) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {la}) \\gexec",  # noqa: S608 - names checked by _ident
        f"ALTER ROLE {ra} WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT PASSWORD :'app_verifier';",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {ra};",
        # what exists: public and every schema the owner made, their tables and sequences
        "SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, " + la + "),",
        "       format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', n.nspname, " + la + "),",
        "       format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', n.nspname, " + la + ")",
        "  FROM pg_catalog.pg_namespace n",
        "  WHERE n.nspowner = current_user::regrole OR n.nspname = 'public' \\gexec",
        # what the owner (migrations) creates later
        f"ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO {ra};",
        f"ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ra};",
        f"ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO {ra};",
    ]
    if ddl:
        role = ddl_role(database)
        rd, ld = _ident(role), _literal(role)
        lines += [
            "\\getenv ddl_verifier DB_DDL_VERIFIER",
            f"SELECT format('CREATE ROLE %I', {ld}) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {ld}) \\gexec",  # noqa: S608 - names checked by _ident
            f"ALTER ROLE {rd} WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT PASSWORD :'ddl_verifier';",
            f"GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {db} TO {rd};",
            f"GRANT USAGE, CREATE ON SCHEMA public TO {rd};",
            # the owner acts as the DDL role (SET, not INHERIT: the owner gains none of its rights) to let
            # the app role read what that role creates, now and later
            f"GRANT {rd} TO CURRENT_USER WITH INHERIT FALSE, SET TRUE;",
            f"SET ROLE {rd};",
            f"ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO {ra};",
            f"ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {ra};",
            "SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, " + la + "),",
            "       format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', n.nspname, " + la + ")",
            "  FROM pg_catalog.pg_namespace n WHERE n.nspowner = current_user::regrole \\gexec",
            "RESET ROLE;",
        ]
    return "\n".join(lines) + "\n"


def create_database_sql(database: str) -> str:
    """The part of a shared instance's bootstrap that runs outside a transaction, connected to
    :data:`MAINTENANCE_DATABASE`: ``database`` created if missing (one task at a time: a session
    advisory lock, released by the unlock or by the session's end), ``PUBLIC``'s default CONNECT and
    TEMPORARY taken away, then ``\\connect`` to it (psql keeps the host, port, user, password and TLS
    settings) and ``BEGIN``. Idempotent."""
    db, ld = _ident(database), _literal(database)
    lines = [
        f"-- db-roles on a shared instance: create {database} if missing (CREATE DATABASE cannot run inside a transaction block)",
        f"SELECT pg_advisory_lock(hashtext('platform:db-create:{database}')) AS locked \\gset",
        f"SELECT format('CREATE DATABASE %I', {ld}) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = {ld}) \\gexec",  # noqa: S608 - names checked by _ident
        # every new database lets PUBLIC connect and make temporary tables: only its own roles may
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC;",
        f"SELECT pg_advisory_unlock(hashtext('platform:db-create:{database}')) AS unlocked \\gset",
        f"\\connect {database}",
        "BEGIN;",
    ]
    return "\n".join(lines) + "\n"


def shared_roles_sql(database: str, *, ddl: bool) -> str:
    """A shared instance's bootstrap (:data:`SHARED_BOOTSTRAP_COMMAND`): :func:`create_database_sql`, then
    :func:`roles_sql` inside the transaction it opened, then ``COMMIT``."""
    return create_database_sql(database) + roles_sql(database, ddl=ddl) + "COMMIT;\n"


def bootstrap_command(create_database: bool = False) -> tuple[str, ...]:
    """The ``db-roles`` command: :data:`SHARED_BOOTSTRAP_COMMAND` where the bootstrap creates its database."""
    return SHARED_BOOTSTRAP_COMMAND if create_database else BOOTSTRAP_COMMAND


def bootstrap_env(database: str, *, ddl: bool, create_database: bool = False) -> dict[str, str]:
    """Plain environment of the ``db-roles`` container (the host, password and verifiers are secrets:
    :data:`OWNER_KEYS`). ``create_database``: the database lives in a shared instance and the bootstrap
    creates it (:func:`shared_roles_sql`, run connected to :data:`MAINTENANCE_DATABASE`)."""
    return {
        "PGPORT": str(PORT),
        "PGDATABASE": MAINTENANCE_DATABASE if create_database else database,
        "PGUSER": OWNER,
        "PGSSLMODE": "require",
        "PGCHANNELBINDING": "require",
        "PGCONNECT_TIMEOUT": "15",
        "PGAPPNAME": BOOTSTRAP_CONTAINER,
        "DB_ROLES_SQL": shared_roles_sql(database, ddl=ddl) if create_database else roles_sql(database, ddl=ddl),
    }


OWNER_KEYS = {"PGHOST": "host", "PGPASSWORD": "password", "DB_APP_VERIFIER": "app_verifier", "DB_DDL_VERIFIER": "ddl_verifier"}
"""``db-roles`` env var -> key of the owner secret's JSON (ECS ``valueFrom: <arn>:<key>::``)."""
OWNER_URL_KEY = "url"
"""Key of the owner secret's JSON that holds the owner's URL, the ``migrate`` container's ``DATABASE_URL``."""


def bootstrap_secrets(ddl: bool) -> dict[str, str]:
    """``db-roles`` env var -> JSON key of the owner secret."""
    return {env: key for env, key in OWNER_KEYS.items() if ddl or env != "DB_DDL_VERIFIER"}


@dataclass(frozen=True, kw_only=True)
class PostgresArgs:
    identifier: str
    """RDS identifier (``<system>-<env>``, ``shared-<env>``). Warning: changing it replaces the instance."""
    database: str | None
    """The database RDS creates with the instance, whose roles and URLs this component composes. None:
    a shared instance (components/shared_data.py), whose systems' databases their bootstraps create."""
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    kms_key_arn: pulumi.Input[str]
    settings: PostgresPreset
    max_storage_gb: int
    """Storage-autoscaling ceiling: the larger of the preset's and the app's ask."""
    rotation: int = 0
    """Bump to generate new passwords (the master's and the roles')."""
    log_retention_days: int = LogsPreset().retention_days
    """Retention of the exported-log groups (the preset's ``logs.retention_days``). Default: the preset model's (7)."""
    dr: DrCopy | None = None
    """Replicate automated backups to another region. Default: none."""
    ddl_role: bool = False
    """Create the runtime-DDL role too (a service makes its own schema: :func:`runtime_ddl_services`). Default: false."""
    account_id: pulumi.Input[str] | None = None
    """This account: the enhanced-monitoring role trusts RDS only on its behalf (``aws:SourceAccount``). Default: no condition."""
    alarm_topic_arn: pulumi.Input[str] | None = None
    """Send the instance's events (:data:`EVENT_CATEGORIES`) here. Default: no subscription."""


@dataclass(frozen=True, kw_only=True)
class DrCopy:
    region: str
    kms_key_arn: pulumi.Input[str]
    """A key in ``region``: an encrypted instance's backups are re-encrypted there."""
    retention_days: int


def _url(user: str, password: str, host: str, database: str) -> str:
    return f"postgresql://{user}:{password}@{host}:{PORT}/{database}?{TLS_QUERY}"


def owner_json(host: str, master: str, database: str, app_verifier: str, ddl_verifier: str | None) -> str:
    """The owner secret's value (:data:`OWNER_KEYS`, :data:`OWNER_URL_KEY`)."""
    value = {OWNER_URL_KEY: _url(OWNER, master, host, database), "host": host, "password": master, "app_verifier": app_verifier}
    if ddl_verifier:
        value["ddl_verifier"] = ddl_verifier
    return json.dumps(value, sort_keys=True)


def role_password(parent: pulumi.Resource, prefix: str, keepers: dict[str, str]) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """A role's password (URL-safe) and its SCRAM verifier, both secrets, both renewed with ``keepers``."""
    child = pulumi.ResourceOptions(parent=parent)
    password = random.RandomPassword(f"{prefix}-password", length=32, special=False, keepers=keepers, opts=child)
    salt = random.RandomBytes(f"{prefix}-salt", length=16, keepers=keepers, opts=child)
    verifier = pulumi.Output.all(password.result, salt.base64).apply(lambda v: scram_verifier(v[0], base64.b64decode(v[1])))
    return pulumi.Output.secret(password.result), pulumi.Output.secret(verifier)


class Postgres(pulumi.ComponentResource):
    """RDS Postgres in isolated subnets, TLS enforced, encrypted with the environment key."""

    security_group_id: pulumi.Output[str]
    """Add ingress from a consumer to this group (port :data:`PORT`)."""
    address: pulumi.Output[str]
    """Hostname clients connect to."""
    database_url: pulumi.Output[str] | None
    """``postgresql://<database>_app:pass@host:5432/db?`` :data:`TLS_QUERY`, a secret: the app role (None
    on a shared instance)."""
    ddl_url: pulumi.Output[str] | None
    """The runtime-DDL role's URL (with ``ddl_role``), a secret."""
    owner_secret: pulumi.Output[str] | None
    """JSON, a secret (None on a shared instance): ``url`` (the owner's URL, for migrations), ``host``, ``password`` and the roles'
    SCRAM verifiers (``app_verifier``, ``ddl_verifier``), for the bootstrap (:data:`OWNER_KEYS`)."""
    master_password: pulumi.Output[str]
    """The owner's (RDS master's) password, a secret: a shared instance's systems compose their owner secrets with it."""
    instance: aws.rds.Instance
    port: int = PORT
    database: str | None
    ddl: bool
    creates_database: bool = False
    """Whether the ``db-roles`` bootstrap creates the database (a shared instance's systems: components/shared_data.py)."""

    def __init__(self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:data:Postgres", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        self.database = args.database
        self.ddl = args.ddl_role
        sg = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, description=f"Postgres {args.identifier}: ingress added per consuming service", egress=[], opts=child
        )
        subnets = aws.rds.SubnetGroup(f"{name}-subnets", subnet_ids=args.subnet_ids, description=f"{args.identifier} isolated subnets", opts=child)
        params = aws.rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{s.engine_major}",
            description=f"{args.identifier}: TLS only, slow queries logged",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_min_duration_statement", value="1000"),
                # Static: RDS refuses apply_method "immediate" for it, and reads "pending-reboot" back, so
                # stating it keeps the next preview empty (terraform-provider-aws parameter_group.go hashes
                # name, apply_method and value into the set; flex.go flattenParameters reads ApplyMethod from
                # DescribeDBParameters). A new instance boots with it; an existing one at its next reboot.
                aws.rds.ParameterGroupParameterArgs(
                    name="max_connections", value=str(postgres_max_connections(s.instance_class)), apply_method="pending-reboot"
                ),
                # the engine default since PostgreSQL 14, stated: the master password RDS sets is stored as
                # a SCRAM verifier, which the bootstrap's channel binding needs (module docstring)
                aws.rds.ParameterGroupParameterArgs(name="password_encryption", value="scram-sha-256"),
            ],
            opts=child,
        )
        # RDS creates /aws/rds/instance/<id>/<log> on first export, without a retention or a key. Ours
        # exist first (the instance depends on them), with the environment key and the preset's retention.
        # The key policy (components/kms.py) already admits CloudWatch Logs for every log group of the
        # account and region (kms:EncryptionContext:aws:logs:arn ArnLike ...:log-group:*).
        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-{log}-logs",
                name=f"/aws/rds/instance/{args.identifier}/{log}",
                retention_in_days=args.log_retention_days,
                kms_key_id=args.kms_key_arn,
                opts=child,
            )
            for log in LOG_EXPORTS
        ]
        keepers = {"rotation": str(args.rotation)}
        password = random.RandomPassword(f"{name}-password", length=32, special=False, keepers=keepers, opts=child)
        app_password = app_verifier = ddl_password = ddl_verifier = None
        if args.database is not None:
            app_password, app_verifier = self._role_password(f"{name}-app", keepers)
        if args.ddl_role and args.database is not None:
            ddl_password, ddl_verifier = self._role_password(f"{name}-ddl", keepers)
        monitoring_role = None
        if s.monitoring_interval_seconds:
            # RDS sets aws:SourceAccount when it assumes a role for an instance of this account (RDS user
            # guide, "Preventing cross-service confused deputy problems")
            monitoring_role = aws.iam.Role(
                f"{name}-monitoring",
                assume_role_policy=service_trust("monitoring.rds.amazonaws.com", source_account=args.account_id),
                managed_policy_arns=["arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"],
                opts=child,
            )
        final_snapshot = None
        if s.final_snapshot:
            # DB snapshot identifiers are unique per account and region: a second delete that names an existing
            # one fails (DeleteDBInstance: DBSnapshotAlreadyExists). Each incarnation of the instance gets its own
            # suffix, renewed with what replaces it (the identifier, the key, the database name).
            suffix = random.RandomId(
                f"{name}-final-id",
                byte_length=4,
                keepers={"identifier": args.identifier, "kms": args.kms_key_arn, "database": args.database or ""},
                opts=child,
            )
            final_snapshot = pulumi.Output.concat(args.identifier, "-final-", suffix.hex)
        self.instance = aws.rds.Instance(
            f"{name}-instance",
            identifier=args.identifier,
            engine="postgres",
            engine_version=str(s.engine_major),
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            instance_class=s.instance_class,
            storage_type="gp3",
            allocated_storage=s.allocated_storage_gb,
            max_allocated_storage=args.max_storage_gb,
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_name=args.database,
            username=OWNER,
            password=password.result,
            port=PORT,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[sg.id],
            publicly_accessible=False,
            parameter_group_name=params.name,
            multi_az=s.multi_az,
            backup_retention_period=s.backup_retention_days,
            backup_window="03:00-03:30",
            maintenance_window="sun:04:00-sun:05:00",
            copy_tags_to_snapshot=True,
            deletion_protection=s.deletion_protection,
            skip_final_snapshot=not s.final_snapshot,
            final_snapshot_identifier=final_snapshot,
            # where a deletion must leave a way back (final snapshot on), the automated backups stay too:
            # point-in-time restore for their retention period (the provider's default deletes them)
            delete_automated_backups=not s.final_snapshot,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            iam_database_authentication_enabled=True,
            performance_insights_enabled=s.performance_insights,
            performance_insights_kms_key_id=args.kms_key_arn if s.performance_insights else None,
            performance_insights_retention_period=7 if s.performance_insights else None,
            monitoring_interval=s.monitoring_interval_seconds,
            monitoring_role_arn=monitoring_role.arn if monitoring_role else None,
            tags={"Name": args.identifier},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=log_groups,
                protect=s.deletion_protection,
                # Multi-AZ creation and storage modifications routinely take 20+ minutes.
                custom_timeouts=pulumi.CustomTimeouts(create="90m", update="120m", delete="60m"),
            ),
        )
        if args.dr:
            # Point-in-time restore in the DR region, from backups RDS copies continuously (RPO: minutes).
            aws.rds.InstanceAutomatedBackupsReplication(
                f"{name}-dr-backups",
                source_db_instance_arn=self.instance.arn,
                retention_period=args.dr.retention_days,
                kms_key_id=args.dr.kms_key_arn,
                region=args.dr.region,
                opts=child,
            )
        if args.alarm_topic_arn is not None:
            # The topic's default access policy lets every RDS resource of the account publish (RDS user
            # guide, "Granting permissions to publish notifications to an Amazon SNS topic"); the topic's
            # key admits events.rds.amazonaws.com (components/kms.py, RdsEventsToSns).
            aws.rds.EventSubscription(
                f"{name}-events",
                name=f"{args.identifier}-events",
                sns_topic=args.alarm_topic_arn,
                source_type="db-instance",
                source_ids=[self.instance.identifier],
                event_categories=list(EVENT_CATEGORIES),
                enabled=True,
                opts=child,
            )
        self.security_group_id = sg.id
        self.address = self.instance.address
        self.master_password = pulumi.Output.secret(password.result)
        self.database_url = self.ddl_url = self.owner_secret = None
        database = args.database
        if database is None or app_password is None or app_verifier is None:  # a shared instance: its systems compose their own
            self.register_outputs({"security_group_id": self.security_group_id, "address": self.address})
            return
        self.database_url = pulumi.Output.secret(
            pulumi.Output.all(self.instance.address, app_password).apply(lambda v: _url(app_role(database), v[1], v[0], database))
        )
        if ddl_password is not None:
            self.ddl_url = pulumi.Output.secret(
                pulumi.Output.all(self.instance.address, ddl_password).apply(lambda v: _url(ddl_role(database), v[1], v[0], database))
            )

        def owner(v: Sequence[str]) -> str:
            host, master, app_v, ddl_v = v
            return owner_json(host, master, database, app_v, ddl_v or None)

        self.owner_secret = pulumi.Output.secret(
            pulumi.Output.all(self.instance.address, password.result, app_verifier, ddl_verifier if ddl_verifier is not None else "").apply(owner)
        )
        self.register_outputs({"security_group_id": self.security_group_id, "address": self.address})

    def _role_password(self, prefix: str, keepers: dict[str, str]) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        return role_password(self, prefix, keepers)
