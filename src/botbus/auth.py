"""Identities on the bus: NATS decentralised auth, issued by botbus.

The broker runs in operator mode. botbus holds an *authority* (a directory
of nkey seeds): an operator, the system account, the ``BOTBUS`` account all
components share, and two *scoped signing keys* of that account. A scoped
key carries a permission template; every user it signs gets exactly that
template, with ``{{name()}}`` replaced by the user's name. So a new service
needs only a signed user JWT (``botbus creds issue NAME``) and the broker
confines it to its own name, with no edit to any configuration:

- role ``service`` (user name = service name): its own subjects
  ``<name>.>``, its outbound and dead-letter subjects, its own durable
  consumers (each pinned to its filter subject through the filtered
  ``$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>`` subject), the
  use of its own streams and KV buckets ``svc_<name>`` (plus
  ``svc_<name>_<suffix>`` for the suffixes issued as ``res:<suffix>`` tags):
  read, purge, consume, never create, update or restore them (it asks the
  provisioner on ``botbus.ctl.provision.<name>``, see :mod:`botbus.provision`),
  its own inboxes ``_INBOX.<name>.>`` and the micro-service discovery
  subjects of its name.
- role ``publisher`` (tag ``publishes:<service>``): publish only to
  ``<service>.<token>`` (e.g. ``alerts.<channel>``, never the service's
  deeper internals) and read only its own inbox (JetStream acks).

The gateway and admin identities are signed by the account key itself and
carry their own permission lists (the gateway's is :func:`gateway_permissions`).

Checked against nats-server 2.15 (``tests/auth``): templates expand inside
a token (``{{name()}}_cmd``, ``svc_{{name()}}``), inside the filtered
consumer-create subject, and a ``{{tag(res)}}`` template expands once per tag
value (and to nothing when the user has no such tag).

JWTs are encoded here (header and claims as JSON, base64url, an Ed25519
signature by the issuer's nkey); nkeys come from the ``nkeys`` package.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from botbus import subjects
from botbus.errors import ConfigError
from botbus.settings import Settings

log = logging.getLogger(__name__)

ACCOUNT_NAME = "BOTBUS"
OPERATOR_NAME = "botbus"
AUTHORITY_FILE = "authority.json"
CREDS_DIR = "creds"

# A service name is one subject token without "_", so "<name>_cmd", "svc_<name>_<x>"
# and "<name>_pub" can never be another service's consumer, bucket or inbox.
_SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,31}\Z")
_SUFFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,31}\Z")
_PUBLISHER_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+\Z")
# Names that would collide with botbus's own subjects, streams, users or NATS internals.
RESERVED_NAMES = frozenset(
    {
        "admin",
        "botbus",
        "gateway",
        "publisher",
        "svc",
        "kv",
        "sys",
        "system",
        "js",
        "srv",
        "inbox",
        "mqtt",
        "nats",
        "all",
    }
)

_NAME = "{{name()}}"
# The last token of the plain-message subject (botbus.in.msg), the value of "listens".
_MESSAGES_TOKEN = subjects.INBOUND_MESSAGES.rsplit(".", 1)[1]
_PUBLISHES = "{{tag(publishes)}}"
_PLACEHOLDER = "qqnameqq"  # a valid token standing in for {{name()}} while building subjects
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}
# Subscriptions one connection of a service (or of a publisher) may hold: each costs the
# broker memory. A service process holds a few dozen (its feeds, $SRV endpoints, KV
# watches, one inbox); a publisher one.
SERVICE_MAX_SUBS = 1000
PUBLISHER_MAX_SUBS = 100

# The shared streams a service reads and consumes from, and its consumers on them:
# (stream, consumer name of service, filter subject of service).
_FEEDS = (
    (subjects.STREAM_INBOUND, subjects.consumer_commands, subjects.inbound_commands_of),
    (subjects.STREAM_INBOUND, subjects.consumer_callbacks, subjects.inbound_callback),
    (subjects.STREAM_EVENTS, subjects.consumer_events, subjects.delivery_event),
    (subjects.STREAM_EVENTS, subjects.consumer_forget, lambda _s: subjects.EVENT_FORGET),
)
_SHARED_STREAMS = (
    subjects.STREAM_INBOUND,
    subjects.STREAM_OUTBOUND,
    subjects.STREAM_EVENTS,
    subjects.STREAM_DLQ,
)


def check_service_name(name: str) -> str:
    """``name`` if it may name a service; else :class:`ConfigError` saying why."""
    if not _SERVICE_NAME_RE.match(name):
        raise ConfigError(
            f"invalid service name {name!r}: use 1-32 lowercase letters or digits, "
            "starting with a letter (no '_', '.', '-' or spaces)"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"service name {name!r} is reserved by botbus; choose another")
    return name


def _templated(subject: str) -> str:
    return subject.replace(_PLACEHOLDER, _NAME)


def _stream_use(stream: str) -> list[str]:
    """What a service may do with a stream (or KV bucket stream) of its own: read it,
    purge it, consume it; never create, update or restore it (botbus.provision does)."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
        f"$JS.API.STREAM.MSG.*.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.*.{stream}",
        f"$JS.API.CONSUMER.*.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _stream_rights(stream: str) -> list[str]:
    """Everything the gateway may do with a stream it owns, its configuration included."""
    return [f"$JS.API.STREAM.*.{stream}", *_stream_use(stream)]


def _bucket_rights(bucket: str) -> list[str]:
    return [*_stream_rights(f"KV_{bucket}"), f"$KV.{bucket}.>"]


def _bucket_use(bucket: str) -> list[str]:
    return [*_stream_use(f"KV_{bucket}"), f"$KV.{bucket}.>"]


def service_template() -> dict[str, Any]:
    """Permissions of every service identity, ``{{name()}}`` standing for its name."""
    n = _PLACEHOLDER
    publish = [
        f"{n}.>",
        subjects.outbound_of(n),
        subjects.dead_letter(n),
        *(f"$JS.API.STREAM.INFO.{s}" for s in _SHARED_STREAMS),
    ]
    for stream, consumer_of, filter_of in _FEEDS:
        consumer = consumer_of(n)
        publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter_of(n)}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>",
        ]
    # Every plain message of every chat, only for a service issued the tag "listens:msg"
    # (Grants(listens=True); a service with an on_message handler declares it): a
    # template rule with a tag expands to nothing for a user without that tag.
    listens = "{{tag(listens)}}"
    feed = f"{subjects.STREAM_INBOUND}.{n}_{listens}"
    publish += [
        f"$JS.API.CONSUMER.INFO.{feed}",
        f"$JS.API.CONSUMER.CREATE.{feed}.{subjects.PREFIX}.in.{listens}",
        f"$JS.API.CONSUMER.MSG.NEXT.{feed}",
        f"$JS.ACK.{feed}.>",
    ]
    own = subjects.service_bucket(n)
    publish += _stream_use(own) + _bucket_use(own)
    # Suffixed streams and buckets: a template cannot wildcard part of a token, so
    # each suffix is issued as a tag ("res:<suffix>") and expands here.
    suffixed = f"{own}_{{{{tag(res)}}}}"
    publish += _stream_use(suffixed) + _bucket_use(suffixed)
    # Its streams and buckets are made by the core's provisioner (botbus.provision):
    # NATS cannot check the subjects inside a create request, the provisioner does.
    publish.append(subjects.provision(n))
    # Publishing into another service's namespace, one token deep (a mood alert to
    # alerts.mood), never into its internals (alerts.remind.fired).
    publish.append(f"{_PUBLISHES}.*")
    subscribe = [
        f"{n}.>",
        f"_INBOX.{n}.>",
        subjects.SRV_PING,
        subjects.SRV_INFO,
        subjects.SRV_STATS,
        f"$SRV.*.{n}",
        f"$SRV.*.{n}.*",
    ]
    return {
        "pub": {"allow": [_templated(s) for s in publish]},
        "sub": {"allow": [_templated(s) for s in subscribe]},
        "resp": {"max": 1, "ttl": 0},
        **_UNLIMITED,
        "subs": SERVICE_MAX_SUBS,
    }


def publisher_template() -> dict[str, Any]:
    """Permissions of a publisher: only ``<service>.<one token>`` of the service it is for."""
    return {
        "pub": {"allow": [f"{_PUBLISHES}.*"]},
        "sub": {"allow": [f"_INBOX.{_NAME}.>"]},
        # MQTT has no nonce to sign: a device logs in with the JWT alone as its password,
        # which the server accepts only for bearer tokens. The JWT is then the secret.
        "bearer_token": True,
        **_UNLIMITED,
        "subs": PUBLISHER_MAX_SUBS,
    }


def gateway_permissions() -> dict[str, Any]:
    """The gateway's permissions: inbound traffic, events, its buckets, outbound lanes."""
    publish = [
        subjects.INBOUND_ALL,
        subjects.EVENTS_ALL,
        subjects.dead_letter("gateway"),
        subjects.outbound_of("gateway"),
        "$SRV.>",
        "$JS.API.INFO",
        # The provisioner creates services' svc_* streams and KV_svc_* buckets. A NATS
        # wildcard is a whole token, so "svc_*" cannot be spelled: any stream name.
        "$JS.API.STREAM.CREATE.*",
        "$JS.API.STREAM.UPDATE.*",
        "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        *(f"$JS.API.STREAM.*.{s}" for s in _SHARED_STREAMS),
        f"$JS.API.CONSUMER.INFO.{subjects.STREAM_INBOUND}.*",
        f"$JS.API.CONSUMER.LIST.{subjects.STREAM_INBOUND}",
        f"$JS.API.CONSUMER.NAMES.{subjects.STREAM_INBOUND}",
        *_stream_rights(subjects.STREAM_OUTBOUND),
        f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.STREAM_OUTBOUND}.*",
    ]
    for bucket in (
        subjects.KV_GATEWAY_REGISTRY,
        subjects.KV_GATEWAY_USERS,
        subjects.KV_GATEWAY_SENT,
        subjects.KV_GATEWAY_UPDATES,
        subjects.KV_GATEWAY_LEASE,
        subjects.KV_GATEWAY_OWNERS,
        subjects.KV_PROVISIONING,
    ):
        publish += _bucket_rights(bucket)
    return {
        "pub": {"allow": publish},
        # botbus.gateway.status: `botbus status` (admin) asks for the outbound figures
        "sub": {"allow": ["_INBOX.>", subjects.GATEWAY_STATUS, subjects.PROVISION_ALL]},
        "resp": {"max": 1, "ttl": 0},
        **_UNLIMITED,
    }


# --- JWT encoding ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(signer: nkeys.KeyPair, claims: dict[str, Any]) -> str:
    """A NATS JWT: ``claims`` issued (``iss``) and signed by ``signer``.

    The id (``jti``) is the base32 SHA-512/256-style digest of the claims, as
    NATS's own tools make it, so two issues of the same claims differ only by ``iat``.
    """
    body = dict(claims, iat=int(time.time()), iss=signer.public_key.decode(), jti="")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = signer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, without checking its signature (the broker does that)."""
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
    except (IndexError, ValueError) as exc:
        raise ConfigError("not a NATS JWT (expected header.claims.signature)") from exc
    if not isinstance(claims, dict):
        raise ConfigError("not a NATS JWT (its claims are not a JSON object)")
    return claims


def _new_key(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _public(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


@dataclass(frozen=True)
class Grants:
    """What a service needs beyond its own name, written into its identity as tags.

    ``resources``: suffixes of its extra streams and buckets (``svc_<name>_<suffix>``).
    ``publishes``: subject prefixes it may publish to, one token deeper
    (``<prefix>.*``), e.g. another service's name.
    ``listens``: it reads every plain message of every chat (its ``on_message``).
    """

    resources: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    listens: bool = False

    def merged(self, other: Grants) -> Grants:
        """What this and ``other`` grant together (in order, each once)."""
        return Grants(
            resources=tuple(dict.fromkeys((*self.resources, *other.resources))),
            publishes=tuple(dict.fromkeys((*self.publishes, *other.publishes))),
            listens=self.listens or other.listens,
        )

    def tags(self) -> list[str]:
        """The user-JWT tags the service template expands."""
        for suffix in self.resources:
            if not _SUFFIX_RE.match(suffix):
                raise ConfigError(
                    f"invalid resource suffix {suffix!r}: use lowercase letters and digits"
                )
        for target in self.publishes:
            if not all(subjects.is_valid_name(token) for token in target.split(".")):
                raise ConfigError(f"invalid subject prefix to publish to: {target!r}")
        return [
            *(f"res:{s}" for s in self.resources),
            *(f"publishes:{p}" for p in self.publishes),
            *(["listens:" + _MESSAGES_TOKEN] if self.listens else []),
        ]


@dataclass(frozen=True)
class Credentials:
    """A user JWT and its nkey seed: what a ``.creds`` file holds."""

    name: str
    jwt: str
    seed: str

    def text(self) -> str:
        """The ``.creds`` file format nats clients read (``user_credentials=``)."""
        return (
            "-----BEGIN NATS USER JWT-----\n"
            f"{self.jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{self.seed}\n"
            "------END USER NKEY SEED------\n"
        )

    @classmethod
    def read(cls, path: Path) -> Credentials:
        """The credentials in a ``.creds`` file; :class:`ConfigError` if it is not one."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read NATS credentials {path}: {exc.strerror}") from exc
        jwt = re.search(r"-----BEGIN NATS USER JWT-----\s*(\S+)", text)
        seed = re.search(r"-----BEGIN USER NKEY SEED-----\s*(\S+)", text)
        if jwt is None or seed is None:
            raise ConfigError(f"{path} is not a .creds file (no NATS USER JWT and seed)")
        claims = decode_claims(jwt.group(1))
        return cls(str(claims.get("name", "")), jwt.group(1), seed.group(1))

    def write(self, path: Path) -> Path:
        """Write the ``.creds`` file (mode 0600, atomically) and return its path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.text())
        partial.replace(path)
        return path


def identity_name(path: Path) -> str:
    """The user name inside a ``.creds`` file (its JWT's ``name``)."""
    return Credentials.read(path).name


class Authority:
    """The keys that issue identities on one botbus bus.

    Kept as nkey seeds in ``<dir>/authority.json`` (mode 0600): whoever holds
    it can issue any identity, so it stays with the operator of the bus.
    """

    def __init__(self, seeds: dict[str, str], directory: Path | None = None) -> None:
        self.directory = directory
        self._seeds = seeds
        self.operator = nkeys.from_seed(seeds["operator"].encode())
        self.system = nkeys.from_seed(seeds["system"].encode())
        self.account = nkeys.from_seed(seeds["account"].encode())
        self.service_key = nkeys.from_seed(seeds["service"].encode())
        self.publisher_key = nkeys.from_seed(seeds["publisher"].encode())

    @classmethod
    def create(cls, directory: Path | None = None) -> Authority:
        """New keys (written to ``directory`` when given)."""
        seeds = {
            "operator": _new_key(nkeys.PREFIX_BYTE_OPERATOR).seed.decode(),
            "system": _new_key(nkeys.PREFIX_BYTE_ACCOUNT).seed.decode(),
            "account": _new_key(nkeys.PREFIX_BYTE_ACCOUNT).seed.decode(),
            "service": _new_key(nkeys.PREFIX_BYTE_ACCOUNT).seed.decode(),
            "publisher": _new_key(nkeys.PREFIX_BYTE_ACCOUNT).seed.decode(),
        }
        authority = cls(seeds, directory)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / AUTHORITY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(seeds, out, indent=2)
        return authority

    @classmethod
    def load(cls, directory: Path) -> Authority:
        """The authority kept in ``directory``; :class:`ConfigError` if there is none."""
        path = directory / AUTHORITY_FILE
        try:
            seeds = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no botbus authority in {directory}: run this in the directory of the "
                "running `botbus up` or set BOTBUS_DATA_DIR to its data directory "
                "(a new bus: `botbus up` or `botbus creds init` creates one)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the botbus authority {path}: {exc}") from exc
        return cls(seeds, directory)

    @classmethod
    def load_or_create(cls, directory: Path) -> Authority:
        """The authority in ``directory``, created on first use."""
        if (directory / AUTHORITY_FILE).exists():
            return cls.load(directory)
        return cls.create(directory)

    # --- the broker's side -------------------------------------------------------------

    def _account_jwts(self) -> dict[str, str]:
        unlimited = {
            "subs": -1,
            "data": -1,
            "payload": -1,
            "imports": -1,
            "exports": -1,
            "wildcards": True,
            "conn": -1,
            "leaf": -1,
        }
        system = encode_jwt(
            self.operator,
            {
                "sub": _public(self.system),
                "name": "SYS",
                "nats": {"type": "account", "version": 2, "limits": unlimited},
            },
        )
        jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        account = encode_jwt(
            self.operator,
            {
                "sub": _public(self.account),
                "name": ACCOUNT_NAME,
                "nats": {
                    "type": "account",
                    "version": 2,
                    "limits": {**unlimited, **jetstream},
                    "signing_keys": [
                        {
                            "kind": "user_scope",
                            "key": _public(self.service_key),
                            "role": "service",
                            "template": service_template(),
                        },
                        {
                            "kind": "user_scope",
                            "key": _public(self.publisher_key),
                            "role": "publisher",
                            "template": publisher_template(),
                        },
                    ],
                },
            },
        )
        return {_public(self.system): system, _public(self.account): account}

    def server_config(self) -> str:
        """The nats-server configuration block for operator mode (memory resolver).

        Include it in any server's configuration (one node or each node of a
        cluster): the account JWTs are preloaded, so no resolver service is needed.
        """
        operator = encode_jwt(
            self.operator,
            {
                "sub": _public(self.operator),
                "name": OPERATOR_NAME,
                "nats": {
                    "type": "operator",
                    "version": 2,
                    "system_account": _public(self.system),
                },
            },
        )
        preload = "\n".join(f"  {key}: {jwt}" for key, jwt in self._account_jwts().items())
        return (
            "# generated by botbus (botbus.auth): operator mode, accounts preloaded\n"
            f"operator: {operator}\n"
            f"system_account: {_public(self.system)}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n{preload}\n}}\n"
        )

    # --- identities --------------------------------------------------------------------

    def _user(
        self,
        signer: nkeys.KeyPair,
        name: str,
        *,
        tags: Iterable[str] = (),
        permissions: dict[str, Any] | None = None,
    ) -> Credentials:
        user = _new_key(nkeys.PREFIX_BYTE_USER)
        nats_claims: dict[str, Any] = {
            "type": "user",
            "version": 2,
            "issuer_account": _public(self.account),
        }
        if tags := list(tags):
            nats_claims["tags"] = tags
        # A user signed by a scoped key must carry no permissions of its own.
        nats_claims.update(permissions or {})
        token = encode_jwt(signer, {"sub": _public(user), "name": name, "nats": nats_claims})
        return Credentials(name=name, jwt=token, seed=user.seed.decode())

    def issue_service(self, name: str, grants: Grants | None = None) -> Credentials:
        """Credentials confining service ``name`` to its own subjects and state."""
        check_service_name(name)
        tags = (grants or Grants()).tags()
        return self._user(self.service_key, name, tags=tags)

    def issue_publisher(self, service: str, name: str = "publisher") -> Credentials:
        """Credentials that may only publish to ``<service>.<token>`` (e.g. alert publishers).

        ``name`` picks its inbox (``_INBOX.<name>``): "publisher" or a name with a
        "-" (e.g. "sensor-1"), which no service can have, so it never shares a
        service's inbox.
        """
        check_service_name(service)
        if not (name == "publisher" or _PUBLISHER_NAME_RE.match(name)):
            raise ConfigError(
                f"invalid publisher name {name!r}: 'publisher' or lowercase letters, digits "
                "and at least one '-' (e.g. sensor-1)"
            )
        return self._user(self.publisher_key, name, tags=[f"publishes:{service}"])

    def issue_gateway(self) -> Credentials:
        """The gateway's identity (signed by the account: its own permission list)."""
        return self._user(self.account, "gateway", permissions=gateway_permissions())

    def issue_admin(self) -> Credentials:
        """The operator's identity: every subject (``botbus status``, set-up, tests)."""
        return self._user(self.account, "admin", permissions={"pub": {}, "sub": {}, **_UNLIMITED})

    def issue(self, name: str, grants: Grants | None = None) -> Credentials:
        """Credentials of component ``name``: admin, gateway, or a service of that name."""
        if name == "admin":
            return self.issue_admin()
        if name == "gateway":
            return self.issue_gateway()
        return self.issue_service(name, grants)

    def creds_path(self, name: str) -> Path:
        """Where :meth:`ensure_creds` keeps ``name``'s ``.creds`` file."""
        if self.directory is None:
            raise ConfigError("this authority has no directory to keep credentials in")
        return self.directory / CREDS_DIR / f"{name}.creds"

    def ensure_creds(self, name: str, grants: Grants | None = None) -> Path:
        """``name``'s ``.creds`` file in the authority's directory.

        A service's one already there is kept while it still says the same
        (this authority's service key signed it, with the same tags), so every
        process of one service on this machine shares one identity and its
        secret (:func:`dedupe_secret`). Otherwise, and always for the gateway
        and admin (whose permissions are in their JWT and change with botbus),
        it is issued afresh.
        """
        path = self.creds_path(name)
        if name in ("admin", "gateway"):
            return self.issue(name, grants).write(path)
        wanted = sorted((grants or Grants()).tags())
        signers = {_public(self.service_key)}
        try:
            claims = decode_claims(Credentials.read(path).jwt)
            nats_claims = claims.get("nats") or {}
            if (
                claims.get("name") == name
                and claims.get("iss") in signers
                and sorted(nats_claims.get("tags") or []) == wanted
            ):
                return path
        except ConfigError:
            pass  # missing or unreadable: issue it
        return self.issue(name, grants).write(path)


def authority_dir(settings: Settings) -> Path:
    """Where the bus's authority is kept: ``<data dir>/auth``."""
    return settings.data_dir / "auth"


def credentials_for(
    settings: Settings, component: str, grants: Grants | None = None
) -> Path | None:
    """The ``.creds`` file this process logs in with as ``component``.

    ``BOTBUS_NATS_CREDS`` when set; else, when the data directory holds the
    bus's authority (one machine, the embedded broker), credentials issued
    now; else None (a broker without authentication).
    """
    if settings.nats_creds is not None:
        return settings.nats_creds
    directory = authority_dir(settings)
    if not (directory / AUTHORITY_FILE).exists():
        return None
    path = Authority.load(directory).ensure_creds(component, grants)
    log.info(
        "identity %r issued from the authority in %s (one machine; elsewhere give each "
        "process its own .creds in BOTBUS_NATS_CREDS)",
        component,
        directory,
    )
    return path


# -- dedupe ids ------------------------------------------------------------------------


def dedupe_secret(creds: str | Path | None) -> bytes | None:
    """A secret of the identity in ``creds`` for :func:`dedupe_id`; None without one.

    Derived from the identity's nkey seed, so every instance run with the same
    ``.creds`` derives the same secret and no other identity can.
    """
    if creds is None:
        return None
    seed = Credentials.read(Path(creds)).seed
    return hashlib.sha256(b"botbus dedupe id\0" + seed.encode()).digest()


def dedupe_id(secret: bytes | None, key: str) -> str:
    """The ``Nats-Msg-Id`` of an action with idempotency key ``key``.

    JetStream drops a second message with the same id anywhere in the stream,
    whoever publishes it, and idempotency keys are predictable
    (``search:<bot>:<update>:0``): a service publishing another's keys first on
    its own lane would silence that service's replies. Keyed by the publisher's
    secret, the id of a key is the same for every instance of one identity and
    unguessable to every other. Without a secret (a broker without
    authentication, one developer) it is the key itself.
    """
    if secret is None:
        return key
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:40]
