"""Who may do what: rules per calling AE title, and the decisions a server asks of them.

Rules: pure functions and frozen data. A rule names a calling AE title and, optionally, the
addresses it calls from, the subject of the TLS certificate it must present and the users who
may use it; it lists the services the peer may use and the C-MOVE destinations it may name.
Peers without a rule are refused unless unknown peers are allowed. Each decision says why, and
how to say no the standard way:

- at association time, an A-ASSOCIATE-RJ: rejected-permanent by the service user, "calling AE
  title not recognized" (PS3.8 Table 9-21) for an unknown peer or one that does not match its
  rule (address, certificate); rejected-permanent by the ACSE, no reason given (PS3.7
  D.3.3.7) for a user the rule does not admit;
- for a presentation context of a service the peer may not use: reject the context, result 1
  "user-rejection" (PS3.8 Table 9-18), so the peer learns it before sending anything;
- for a request that comes anyway: status 0x0124 "Refused: Not authorized" (PS3.7 C.5.x), and
  for a C-MOVE destination the peer may not name, 0xA801 "Refused: Move destination unknown"
  (PS3.4 C.4.2.1.4); the destination's existence is not revealed to a peer that may not use it.

``load_permissions`` reads the ``[permissions]`` table of the serve configuration (TOML shaped);
a wrong key, type or value is a ``SecurityConfigError`` naming the table and key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dicomnet.dimse.status import Status
from dicomnet.security.decisions import (
    REJECT_AUTHENTICATION,
    REJECT_CALLING_AE,
    Decision,
    SecurityConfigError,
    printable,
)
from dicomnet.security.tls import parse_dn, subject_matches
from dicomnet.uids import QR_MODELS, VERIFICATION, is_storage

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ServiceName(StrEnum):
    """The services a rule can grant (N-services come with their service classes)."""

    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"


ALL = "*"  # in a TOML list: every service, or every destination

_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND
_COMPOSITE_INSTANCE_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.4.2"
_COMPOSITE_INSTANCE_ROOT_GET = "1.2.840.10008.5.1.4.1.2.4.3"
_WITHOUT_BULK_DATA_GET = "1.2.840.10008.5.1.4.1.2.5.3"

_BY_SYNTAX: dict[str, ServiceName] = {VERIFICATION: ServiceName.ECHO}
for _find, _move, _get in QR_MODELS.values():
    _BY_SYNTAX[_find] = ServiceName.FIND
    _BY_SYNTAX[_move] = ServiceName.MOVE
    _BY_SYNTAX[_get] = ServiceName.GET
_BY_SYNTAX[_WORKLIST_FIND] = ServiceName.FIND
_BY_SYNTAX[_COMPOSITE_INSTANCE_ROOT_MOVE] = ServiceName.MOVE
_BY_SYNTAX[_COMPOSITE_INSTANCE_ROOT_GET] = ServiceName.GET
_BY_SYNTAX[_WITHOUT_BULK_DATA_GET] = ServiceName.GET

# (0000,0100) Command Field of the requests (PS3.7 Annex E).
_BY_COMMAND = {
    0x0030: ServiceName.ECHO,
    0x0001: ServiceName.STORE,
    0x0020: ServiceName.FIND,
    0x0021: ServiceName.MOVE,
    0x0010: ServiceName.GET,
}


def service_for_abstract_syntax(uid: str) -> ServiceName | None:
    """The service a presentation context's abstract syntax belongs to; None for the others
    (N-services, private classes), which only a rule granting every service ("*") allows."""
    found = _BY_SYNTAX.get(uid)
    if found is None and is_storage(uid):
        return ServiceName.STORE
    return found


def service_for_command(command_field: int) -> ServiceName | None:
    """The service of a request's command field; None for N-service and other commands."""
    return _BY_COMMAND.get(command_field)


@dataclass(frozen=True, slots=True)
class PeerRule:
    """What one calling AE title may do. ``services``/``move_destinations`` None: everything;
    ``hosts`` empty: any address; ``certificate_subject``/``users`` None: not checked."""

    ae_title: str
    services: frozenset[ServiceName] | None
    move_destinations: frozenset[str] | None = None
    hosts: tuple[IPNetwork, ...] = ()
    certificate_subject: str | None = None
    users: frozenset[str] | None = None

    def allows(self, service: ServiceName | None) -> bool:
        if self.services is None:
            return True
        return service is not None and service in self.services


@dataclass(frozen=True, slots=True)
class Peer:
    """Who asks: the calling AE title, the address, the verified certificate's subject (RFC
    4514) and the verified username, as far as they are known."""

    calling_ae_title: str
    host: str = ""
    certificate_subject: str | None = None
    username: str | None = None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address


def host_matches(host: str, networks: Iterable[IPNetwork]) -> bool:
    """True when the peer's address is in one of ``networks``."""
    address = _address(host)
    return address is not None and any(address in network for network in networks)


class Permissions:
    """The rules of a node and the decisions made from them."""

    def __init__(
        self,
        rules: Iterable[PeerRule] = (),
        *,
        allow_unknown: bool = False,
        unknown_services: frozenset[ServiceName] | None = None,
        unknown_move_destinations: frozenset[str] | None = None,
    ) -> None:
        self.rules: dict[str, PeerRule] = {}
        for rule in rules:
            if rule.ae_title in self.rules:
                raise SecurityConfigError(f"two permission rules for AE title {rule.ae_title!r}")
            self.rules[rule.ae_title] = rule
        self.allow_unknown = allow_unknown
        # What peers without a rule may do when they are let in.
        self.unknown = PeerRule("", unknown_services, unknown_move_destinations)

    @classmethod
    def allow_all(cls) -> Permissions:
        """No restrictions (a node without a ``[permissions]`` table)."""
        return cls(allow_unknown=True)

    def rule_for(self, calling_ae_title: str) -> PeerRule | None:
        return self.rules.get(calling_ae_title.strip())

    def _effective(self, calling_ae_title: str) -> PeerRule | None:
        rule = self.rule_for(calling_ae_title)
        if rule is not None:
            return rule
        return self.unknown if self.allow_unknown else None

    # -- association ------------------------------------------------------------------------------

    def check_association(self, peer: Peer) -> Decision:
        """May this peer associate at all? Checked after the user identity decision, so
        ``peer.username`` is a verified name or None."""
        ae = printable(peer.calling_ae_title)
        rule = self.rule_for(peer.calling_ae_title)
        if rule is None:
            if self.allow_unknown:
                return Decision.allow(f"unknown peer {ae!r} allowed")
            return Decision.refuse_association(
                f"calling AE title {ae!r} is not a known peer", REJECT_CALLING_AE
            )
        if rule.hosts and not host_matches(peer.host, rule.hosts):
            return Decision.refuse_association(
                f"{ae!r} called from {printable(peer.host)}, which is not one of its addresses",
                REJECT_CALLING_AE,
            )
        if rule.certificate_subject is not None:
            if peer.certificate_subject is None:
                return Decision.refuse_association(
                    f"{ae!r} presented no verified TLS certificate", REJECT_CALLING_AE
                )
            if not subject_matches(rule.certificate_subject, peer.certificate_subject):
                return Decision.refuse_association(
                    f"{ae!r} presented the certificate of "
                    f"{printable(peer.certificate_subject, 200)!r}, not its own",
                    REJECT_CALLING_AE,
                )
        if rule.users is not None:
            if peer.username is None:
                return Decision.refuse_association(
                    f"{ae!r} must authenticate as one of its users", REJECT_AUTHENTICATION
                )
            if peer.username not in rule.users:
                return Decision.refuse_association(
                    f"user {printable(peer.username)!r} may not use {ae!r}", REJECT_AUTHENTICATION
                )
        return Decision.allow(f"peer {ae!r} matches its rule")

    def check_context(self, calling_ae_title: str, abstract_syntax: str) -> Decision:
        """May the peer use this presentation context? A refusal means: reject the context
        with "user-rejection" (PS3.8 Table 9-18)."""
        rule = self._effective(calling_ae_title)
        service = service_for_abstract_syntax(abstract_syntax)
        if rule is not None and rule.allows(service):
            return Decision.allow(f"{service or 'every service'} allowed")
        what = service.value if service is not None else f"abstract syntax {abstract_syntax}"
        return Decision(False, f"{printable(calling_ae_title)!r} may not use {what}")

    def services_for(self, calling_ae_title: str) -> frozenset[ServiceName] | None:
        """The services a peer may use (None: all, an empty set: none)."""
        rule = self._effective(calling_ae_title)
        return frozenset() if rule is None else rule.services

    # -- requests ---------------------------------------------------------------------------------

    def check_service(self, calling_ae_title: str, service: ServiceName | None) -> Decision:
        """May the peer use this service now? Refused with 0x0124 "not authorized"."""
        rule = self._effective(calling_ae_title)
        if rule is not None and rule.allows(service):
            return Decision.allow(f"{service or 'every service'} allowed")
        what = service.value if service is not None else "this service"
        return Decision.refuse_request(
            f"{printable(calling_ae_title)!r} may not use {what}", Status.NOT_AUTHORIZED
        )

    def check_move_destination(self, calling_ae_title: str, destination: str) -> Decision:
        """May the peer send a C-MOVE to ``destination``? Refused with 0xA801 "move destination
        unknown" (whether the destination exists is nobody else's business)."""
        rule = self._effective(calling_ae_title)
        ae = printable(calling_ae_title)
        if rule is None or not rule.allows(ServiceName.MOVE):
            return Decision.refuse_request(f"{ae!r} may not use move", Status.NOT_AUTHORIZED)
        destination = destination.strip()
        if rule.move_destinations is None or destination in rule.move_destinations:
            return Decision.allow(f"{ae!r} may move to {printable(destination)!r}")
        return Decision.refuse_request(
            f"{ae!r} may not move to {printable(destination)!r}", Status.MOVE_DESTINATION_UNKNOWN
        )


# -- the TOML table -------------------------------------------------------------------------------

_TOP_KEYS = {"allow_unknown", "unknown_services", "unknown_move_destinations", "ae"}
_RULE_KEYS = {"services", "move_destinations", "hosts", "certificate_subject", "users"}


def check_ae_title(value: str, where: str) -> str:
    """An AE title from a configuration (PS3.5 AE VR: 1-16 characters of the default character
    repertoire without backslash and controls; surrounding spaces are not significant)."""
    title = value.strip()
    if not title or len(title) > 16 or "\\" in title or not title.isascii():
        raise SecurityConfigError(
            f"{where}: {printable(value)!r} is not an AE title (1-16 ASCII characters, no "
            "backslash)"
        )
    if not title.isprintable():
        raise SecurityConfigError(f"{where}: AE title {printable(value)!r} has control characters")
    return title


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list):
        raise SecurityConfigError(
            f'{where}: expected a list of strings, e.g. ["a", "b"], not {type(value).__name__}'
        )
    for item in value:
        if not isinstance(item, str):
            raise SecurityConfigError(
                f"{where}: expected strings in the list, found {type(item).__name__} {item!r}"
            )
    return list(value)


def _services(value: Any, where: str) -> frozenset[ServiceName] | None:
    names = _strings(value, where)
    if ALL in names:
        if len(names) > 1:
            raise SecurityConfigError(f'{where}: "*" (every service) stands alone in the list')
        return None
    known = ", ".join(s.value for s in ServiceName)
    services = set()
    for name in names:
        try:
            services.add(ServiceName(name.strip().lower()))
        except ValueError:
            raise SecurityConfigError(
                f'{where}: unknown service {name!r} (known: {known}, or "*" for all)'
            ) from None
    return frozenset(services)


def _destinations(value: Any, where: str) -> frozenset[str] | None:
    names = _strings(value, where)
    if ALL in names:
        if len(names) > 1:
            raise SecurityConfigError(f'{where}: "*" (every destination) stands alone in the list')
        return None
    return frozenset(check_ae_title(name, where) for name in names)


def _hosts(value: Any, where: str) -> tuple[IPNetwork, ...]:
    networks = []
    for text in _strings(value, where):
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise SecurityConfigError(
                f"{where}: {text!r} is not an IP address or network (like 10.0.0.5 or "
                "10.0.0.0/24); host names are not resolved for permission checks"
            ) from None
    return tuple(networks)


def _rule(ae: str, table: Any, known_users: Iterable[str] | None) -> PeerRule:
    where = f'[permissions.ae."{ae}"]'
    if not isinstance(table, Mapping):
        raise SecurityConfigError(f"{where} must be a table, not {type(table).__name__}")
    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        raise SecurityConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_RULE_KEYS))}"
        )
    if "services" not in table:
        raise SecurityConfigError(
            f"{where}: services is missing: list what this peer may use, e.g. services = "
            f'["echo", "store"], or ["*"] for everything'
        )
    title = check_ae_title(ae, "[permissions.ae]")
    subject = table.get("certificate_subject")
    if subject is not None:
        if not isinstance(subject, str):
            raise SecurityConfigError(f"{where} certificate_subject: expected a string")
        try:
            parse_dn(subject)
        except SecurityConfigError as exc:
            raise SecurityConfigError(f"{where} certificate_subject: {exc}") from None
    users = None
    if "users" in table:
        users = frozenset(_strings(table["users"], f"{where} users"))
        if known_users is not None:
            missing = sorted(users - set(known_users))
            if missing:
                raise SecurityConfigError(
                    f"{where} users: {', '.join(map(repr, missing))} not in the [users] table"
                )
    return PeerRule(
        ae_title=title,
        services=_services(table["services"], f"{where} services"),
        move_destinations=(
            _destinations(table["move_destinations"], f"{where} move_destinations")
            if "move_destinations" in table
            else None
        ),
        hosts=_hosts(table["hosts"], f"{where} hosts") if "hosts" in table else (),
        certificate_subject=subject,
        users=users,
    )


def load_permissions(
    table: Mapping[str, Any], *, known_users: Iterable[str] | None = None
) -> Permissions:
    """Permissions from the ``[permissions]`` table::

        [permissions]
        allow_unknown = false              # peers without a rule are rejected (the default)
        unknown_services = ["echo"]        # what they may use when allowed (default: all)

        [permissions.ae.MODALITY1]
        services = ["echo", "store"]       # required; ["*"] for everything
        hosts = ["10.0.0.5", "10.0.1.0/24"]
        certificate_subject = "CN=modality1,O=Hospital"
        users = ["alice"]                  # names from [users]
        move_destinations = ["VIEWER"]     # default: every known destination

    ``known_users`` (the ``[users]`` names) lets a rule naming a missing user fail at load."""
    if not isinstance(table, Mapping):
        raise SecurityConfigError(f"[permissions] must be a table, not {type(table).__name__}")
    unknown = sorted(set(table) - _TOP_KEYS)
    if unknown:
        raise SecurityConfigError(
            f"[permissions]: unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_TOP_KEYS))} (rules go in [permissions.ae.<AE title>])"
        )
    allow_unknown = table.get("allow_unknown", False)
    if not isinstance(allow_unknown, bool):
        raise SecurityConfigError("[permissions] allow_unknown: expected true or false")
    peers = table.get("ae", {})
    if not isinstance(peers, Mapping):
        raise SecurityConfigError("[permissions.ae] must be a table of AE title = rule")
    rules = [_rule(str(ae), rule, known_users) for ae, rule in peers.items()]
    titles = [rule.ae_title for rule in rules]
    duplicates = sorted({t for t in titles if titles.count(t) > 1})
    if duplicates:
        raise SecurityConfigError(
            f"[permissions.ae]: AE title(s) {', '.join(duplicates)} given twice (surrounding "
            "spaces do not count)"
        )
    return Permissions(
        rules,
        allow_unknown=allow_unknown,
        unknown_services=(
            _services(table["unknown_services"], "[permissions] unknown_services")
            if "unknown_services" in table
            else None
        ),
        unknown_move_destinations=(
            _destinations(
                table["unknown_move_destinations"], "[permissions] unknown_move_destinations"
            )
            if "unknown_move_destinations" in table
            else None
        ),
    )
