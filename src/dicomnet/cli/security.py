"""The security options of the ``dicomnet`` commands (issue 11): TLS, user identity, the users
and permissions tables, the audit trail and the resource limits of ``serve``; the TLS and
``--user``/``--password`` options of the client commands; and ``dicomnet passwd``.

Rules: as ``cli/serve.py``'s: each setting of ``serve`` is a field of ``SecurityConfig`` (a base
of ``ServeConfig``) with an option of the same name and a key of the same name in the TOML file;
``[users]`` and ``[permissions]`` are tables of the file (or files of their own, given with
``--users``/``--permissions``). A wrong value is a ValueError naming the option, before anything
listens. The work is the library's (``dicomnet.security``): this module only turns options into
``DicomServer``/``DicomClient`` arguments. Secure by choice made easy: ``--tls-cert`` alone makes
the port TLS only; ``--tls-port`` adds a TLS port beside the plain one; ``--tls-ca`` requires
client certificates; ``--tls-no-verify`` is never implied.
"""

from __future__ import annotations

import functools
import logging
import socket
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dicomnet.cli.common import CONTEXT_SETTINGS
from dicomnet.pdu import UserIdentityRQ
from dicomnet.security.decisions import SecurityConfigError
from dicomnet.security.limits import parse_size
from dicomnet.security.permissions import Permissions, load_permissions
from dicomnet.security.tls import DEFAULT_HANDSHAKE_TIMEOUT, TLSSettings
from dicomnet.security.users import PasswordHash, load_users, passwd_command

if TYPE_CHECKING:
    from dicomnet.security.guard import ServerSecurity

log = logging.getLogger("dicomnet.cli")


# --- parsers: (option name, raw value) -> value; ValueError names the option -----------------------


def _optional_path(name: str, raw: Any) -> Path | None:
    return None if raw is None or raw == "" else Path(raw)


def _optional_port(name: str, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
        raise ValueError(f"{name} must be a port number, not {raw!r}")
    if not 0 <= int(raw) <= 65535:
        raise ValueError(f"{name} must be 0-65535, not {raw}")
    return int(raw)


def _optional_size(name: str, raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        return parse_size(raw)
    except SecurityConfigError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _optional_count(name: str, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not str(raw).isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def _table_from(name: str, raw: Any, table: str) -> Mapping[str, Any]:
    """A TOML table given inline (the config file's ``[users]``) or as the path of a file that
    holds it (``--users FILE``: a ``[users]`` table or the bare keys)."""
    if isinstance(raw, Mapping):
        return raw
    path = Path(str(raw))
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc}") from None
    inner = data.get(table, data)
    if not isinstance(inner, Mapping):
        raise ValueError(f"{name}: [{table}] in {path} is not a table")
    return inner


def parse_users(name: str, raw: Any) -> Mapping[str, PasswordHash]:
    try:
        return load_users(_table_from(name, raw, "users"))
    except SecurityConfigError as exc:
        raise ValueError(str(exc)) from None


def parse_permissions(name: str, raw: Any) -> Permissions | None:
    if raw is None:
        return None
    try:
        return load_permissions(_table_from(name, raw, "permissions"))
    except SecurityConfigError as exc:
        raise ValueError(str(exc)) from None


def _audit_syslog(name: str, raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    text = str(raw)
    if not text.startswith("/"):
        host, colon, port = text.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{name} must be HOST:PORT (UDP) or a socket path, not {text!r}")
    return text


def syslog_address(text: str) -> tuple[str, int] | str:
    """``HOST:PORT`` as a UDP address, a path (``/dev/log``) as it is."""
    if text.startswith("/"):
        return text
    host, _colon, port = text.rpartition(":")
    return host.strip("[]"), int(port)


# --- serve ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    """The security settings of ``dicomnet serve`` (fields of ``ServeConfig``)."""

    tls_cert: Path | None = field(default=None, metadata={"parse": _optional_path})
    tls_key: Path | None = field(default=None, metadata={"parse": _optional_path})
    tls_ca: Path | None = field(default=None, metadata={"parse": _optional_path})
    tls_no_verify: bool = False
    tls_port: int | None = field(default=None, metadata={"parse": _optional_port})
    tls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    require_user: bool = False
    users: Mapping[str, PasswordHash] = field(default_factory=dict, metadata={"parse": parse_users})
    permissions: Permissions | None = field(default=None, metadata={"parse": parse_permissions})
    audit: Path | None = field(default=None, metadata={"parse": _optional_path})
    audit_syslog: str | None = field(default=None, metadata={"parse": _audit_syslog})
    max_instance_size: int | None = field(default=None, metadata={"parse": _optional_size})
    min_free_disk: int | None = field(default=None, metadata={"parse": _optional_size})
    max_associations_per_host: int | None = field(default=None, metadata={"parse": _optional_count})

    def tls_settings(self) -> TLSSettings | None:
        """The TLS of the node; None without ``tls_cert`` (ValueError for TLS options given
        without it)."""
        if self.tls_cert is None:
            given = [
                f"--{name.replace('_', '-')}"
                for name in ("tls_key", "tls_ca", "tls_port")
                if getattr(self, name) is not None
            ] + (["--tls-no-verify"] if self.tls_no_verify else [])
            if given:
                raise ValueError(f"{', '.join(given)} need(s) --tls-cert (and --tls-key)")
            return None
        try:
            return TLSSettings(
                self.tls_cert,
                self.tls_key,
                self.tls_ca,
                no_verify=self.tls_no_verify,
                handshake_timeout=self.tls_handshake_timeout,
            )
        except SecurityConfigError as exc:
            raise ValueError(str(exc)) from None


def security_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``SecurityConfig`` on the ``serve`` command (no defaults here: the
    fields' are shown in the help, and a missing option leaves the file's value)."""
    options = [
        click.option(
            "--tls-cert",
            default=None,
            metavar="PEM",
            help="Our TLS certificate (chain): TLS on --port only, or on --tls-port beside it "
            "(DICOM over TLS, PS3.15 B.9 BCP 195 profile: TLS 1.2+, AEAD suites).",
        ),
        click.option(
            "--tls-key", default=None, metavar="PEM", help="Its private key (unencrypted PEM)."
        ),
        click.option(
            "--tls-ca",
            default=None,
            metavar="PEM|DIR",
            help="Require client certificates and verify them against these CA certificates "
            "(mutual authentication: a peer that does not verify never reaches an association).",
        ),
        click.option(
            "--tls-no-verify",
            is_flag=True,
            default=None,
            help="Do not ask clients for certificates (excludes --tls-ca).",
        ),
        click.option(
            "--tls-port",
            default=None,
            type=click.IntRange(0, 65535),
            help="Also listen for DICOM over TLS on this port (2762 is registered), keeping "
            "--port plain. Without it, --tls-cert makes --port TLS only.",
        ),
        click.option(
            "--tls-handshake-timeout",
            default=None,
            type=float,
            help="Seconds a TLS handshake may take; a peer slower than that is dropped.  "
            "[default: 30]",
        ),
        click.option(
            "--require-user",
            is_flag=True,
            default=None,
            help="Reject associations without a valid user identity (PS3.7 D.3.3.7): a "
            "username and password from the [users] table.",
        ),
        click.option(
            "--users",
            default=None,
            metavar="TOML",
            help="A file with the [users] table (name = hash from `dicomnet passwd`); in the "
            "config file, a [users] table.",
        ),
        click.option(
            "--permissions",
            default=None,
            metavar="TOML",
            help="A file with the [permissions] table (who may use which service and C-MOVE "
            "destination); in the config file, a [permissions] table.",
        ),
        click.option(
            "--audit",
            default=None,
            metavar="FILE",
            help="Append the audit trail to FILE: one JSON object per line (PS3.15 A.5 fields) "
            "per association, store, query, retrieve, refusal and authentication failure.",
        ),
        click.option(
            "--audit-syslog",
            default=None,
            metavar="HOST:PORT|PATH",
            help="Also send each audit record as an RFC 5424 syslog message (UDP, or a local "
            "socket such as /dev/log).",
        ),
        click.option(
            "--max-instance-size",
            default=None,
            metavar="SIZE",
            help="Refuse a C-STORE data set larger than SIZE (e.g. 2GiB) with 0xA700; nothing "
            "of it is kept.",
        ),
        click.option(
            "--min-free-disk",
            default=None,
            metavar="SIZE",
            help="Refuse C-STOREs with 0xA700, before receiving them, while the storage folder's "
            "file system has less than SIZE free (e.g. 5GB).",
        ),
        click.option(
            "--max-associations-per-host",
            default=None,
            type=click.IntRange(1),
            help="Associations (and TLS handshakes) at once from one address; more are "
            "rejected (transient, local limit exceeded).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: Top-level tables of the config file that belong to ``serve`` beside ``[serve]``.
FILE_TABLES = ("users", "permissions")


def server_security(config: Any, *, aet: str, storage: Path) -> dict[str, Any]:
    """``DicomServer`` keyword arguments for ``config`` (a ``SecurityConfig``): ``ssl``,
    ``tls_port``, ``ssl_handshake_timeout`` and ``security`` (a ``ServerSecurity``, None when
    nothing needs one). ValueError names a setting that cannot be used."""
    from dicomnet.security.audit import Auditor, AuditWriter, JsonLinesWriter, Node, SyslogWriter
    from dicomnet.security.guard import ServerSecurity
    from dicomnet.security.limits import AssociationLimiter

    assert isinstance(config, SecurityConfig)
    settings = config.tls_settings()
    kwargs: dict[str, Any] = {}
    if settings is not None:
        try:
            kwargs["ssl"] = settings.server_context()
        except SecurityConfigError as exc:
            raise ValueError(str(exc)) from None
        kwargs["tls_port"] = config.tls_port
        kwargs["ssl_handshake_timeout"] = settings.handshake_timeout
    permissions = config.permissions
    if permissions is not None:
        for rule in permissions.rules.values():
            missing = sorted((rule.users or frozenset()) - set(config.users))
            if missing:
                raise ValueError(
                    f'[permissions.ae."{rule.ae_title}"] users: '
                    f"{', '.join(map(repr, missing))} not in the [users] table"
                )
    if config.require_user and not config.users:
        raise ValueError("--require-user needs users: a [users] table (or --users FILE)")
    writers: list[AuditWriter] = []
    try:
        if config.audit is not None:
            writers.append(JsonLinesWriter(config.audit))
        if config.audit_syslog is not None:
            writers.append(SyslogWriter(syslog_address(config.audit_syslog)))
    except OSError as exc:
        for writer in writers:
            writer.close()
        raise ValueError(f"cannot open the audit trail: {exc}") from None
    wanted = (
        writers
        or config.users
        or config.require_user
        or permissions is not None
        or config.max_instance_size is not None
        or config.min_free_disk is not None
        or config.max_associations_per_host is not None
    )
    if wanted:
        kwargs["security"] = ServerSecurity(
            users=config.users,
            require_user=config.require_user,
            permissions=permissions,
            limiter=(
                AssociationLimiter(max_per_address=config.max_associations_per_host)
                if config.max_associations_per_host is not None
                else None
            ),
            auditor=Auditor(writers, Node(ae_title=aet)) if writers else None,
            storage=storage,
            min_free_disk=config.min_free_disk,
            max_instance_size=config.max_instance_size,
        )
    _describe(config, settings, kwargs.get("security"))
    return kwargs


def _describe(config: SecurityConfig, tls: TLSSettings | None, security: Any) -> None:
    if tls is not None:
        where = f"port {config.tls_port} beside the plain port" if config.tls_port else "TLS only"
        clients = (
            f"client certificates required (CA {tls.ca})" if tls.ca else "no client certificates"
        )
        log.info("TLS: %s, %s, handshake timeout %g s", where, clients, tls.handshake_timeout)
    if security is None:
        return
    permissions = config.permissions
    log.info(
        "security: %d user(s)%s; %s; audit: %s; limits: instance %s, free disk %s, "
        "%s association(s) per address",
        len(config.users),
        ", identity required" if config.require_user else "",
        (
            f"{len(permissions.rules)} permission rule(s), unknown peers "
            + ("allowed" if permissions.allow_unknown else "rejected")
            if permissions is not None
            else "no permission rules"
        ),
        ", ".join(str(p) for p in (config.audit, config.audit_syslog) if p) or "off",
        config.max_instance_size if config.max_instance_size is not None else "unlimited",
        config.min_free_disk if config.min_free_disk is not None else "not checked",
        config.max_associations_per_host or "any",
    )


def tls_socket_for_workers(config: Any) -> socket.socket | None:
    """The listening socket of ``--tls-port`` for ``--workers`` (bound once, before the fork,
    like the plain one); None without a separate TLS port."""
    assert isinstance(config, SecurityConfig)
    if config.tls_cert is None or config.tls_port is None:
        return None
    host = getattr(config, "host", "127.0.0.1")
    try:
        return socket.create_server((host, config.tls_port), backlog=256)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{config.tls_port}: {exc}") from None


def audit_application(security: ServerSecurity | None, *, started: bool) -> None:
    """Audit the node starting or stopping (Application Activity); closes the trail after the
    stop."""
    if security is None or security.auditor is None:
        return
    security.auditor.application(started=started)
    if not started:
        security.close()


# --- client commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSecurity:
    """TLS and user identity of a client command, as ``DicomClient`` keyword arguments."""

    tls: TLSSettings | None = None
    server_name: str | None = None
    identity: UserIdentityRQ | None = field(default=None, repr=False)

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"user_identity": self.identity}
        if self.tls is not None:
            kwargs["ssl"] = self.tls.client_context()
            kwargs["ssl_handshake_timeout"] = self.tls.handshake_timeout
            kwargs["server_hostname"] = self.server_name
        return kwargs


def _client_security(
    tls: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_no_verify: bool,
    tls_server_name: str | None,
    user: str | None,
    password: str | None,
) -> ClientSecurity:
    settings = None
    if tls or tls_cert or tls_key or tls_ca or tls_no_verify or tls_server_name:
        try:
            settings = TLSSettings(
                Path(tls_cert) if tls_cert else None,
                Path(tls_key) if tls_key else None,
                Path(tls_ca) if tls_ca else None,
                no_verify=tls_no_verify,
            )
            settings.client_context()  # the files are usable: say so now, not at connect
        except SecurityConfigError as exc:
            raise click.UsageError(str(exc)) from None
    identity = None
    if password is not None and user is None:
        raise click.UsageError("--password needs --user")
    if user is not None:
        try:
            identity = (
                UserIdentityRQ.password(user, password)
                if password is not None
                else UserIdentityRQ.username(user)
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    return ClientSecurity(settings, tls_server_name, identity)


def client_security_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--tls``, ``--tls-cert``, ``--tls-key``, ``--tls-ca``, ``--tls-no-verify``,
    ``--tls-server-name``, ``--user``, ``--password`` on a client command, handed to it as one
    ``security: ClientSecurity`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["security"] = _client_security(
            *(
                kwargs.pop(name)
                for name in (
                    "tls",
                    "tls_cert",
                    "tls_key",
                    "tls_ca",
                    "tls_no_verify",
                    "tls_server_name",
                    "user",
                    "password",
                )
            )
        )
        return func(*args, **kwargs)

    options = [
        click.option(
            "--tls",
            is_flag=True,
            help="Use TLS (PS3.15 B.9, BCP 195 profile); implied by the other --tls options. "
            "The server is verified against the system's CAs unless --tls-ca or "
            "--tls-no-verify.",
        ),
        click.option(
            "--tls-cert",
            default=None,
            metavar="PEM",
            help="Our certificate, for servers that require one (DCMTK's +tls key cert).",
        ),
        click.option("--tls-key", default=None, metavar="PEM", help="Its private key."),
        click.option(
            "--tls-ca",
            default=None,
            metavar="PEM|DIR",
            help="Verify the server's certificate against these CA certificates.",
        ),
        click.option(
            "--tls-no-verify",
            is_flag=True,
            help="Accept any server certificate: encryption without authentication.",
        ),
        click.option(
            "--tls-server-name",
            default=None,
            metavar="NAME",
            help="The name the server's certificate must carry.  [default: HOST]",
        ),
        click.option(
            "--user",
            default=None,
            help="User identity to send (PS3.7 D.3.3.7); with --password a username and "
            "passcode, else a username only.",
        ),
        click.option(
            "--password",
            default=None,
            envvar="DICOMNET_PASSWORD",
            help="The passcode of --user (or the environment variable DICOMNET_PASSWORD, "
            "which other users cannot see in the process list).",
        ),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


# --- dicomnet passwd ------------------------------------------------------------------------------


@click.command("passwd", context_settings=CONTEXT_SETTINGS)
def passwd() -> None:
    """Read a password from standard input and print its salted scrypt hash, for the [users]
    table of `dicomnet serve`: `alice = "<hash>"`. On a terminal it asks twice without echo;
    otherwise it reads the first line. The password itself is never stored."""
    sys.exit(passwd_command())


__all__ = [
    "FILE_TABLES",
    "ClientSecurity",
    "SecurityConfig",
    "audit_application",
    "client_security_options",
    "passwd",
    "security_options",
    "server_security",
    "syslog_address",
    "tls_socket_for_workers",
]
