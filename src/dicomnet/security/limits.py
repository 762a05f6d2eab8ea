"""Resource limits an attacker cannot exhaust: associations in total and per peer address, free
disk space before a C-STORE is written, the size of one instance.

Rules: the counter is pure bookkeeping (no clock, no I/O) driven by the server: ``acquire`` when
an association is requested, ``release`` when it ends, whatever the outcome. A refused
association is answered A-ASSOCIATE-RJ rejected-transient, "local limit exceeded" (PS3.8 Table
9-21, source 3 reason 2): the peer may try again later. Storage that would go below the minimum
free space, or an instance over the size limit, is refused with 0xA700 "Refused: Out of
Resources" (PS3.4 B.2.3); the server decides that when the C-STORE command arrives and discards
the data set instead of writing it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from collections import Counter

from dicomnet.dimse.status import Status
from dicomnet.security.decisions import REJECT_LOCAL_LIMIT, Decision, SecurityConfigError


def address_key(host: str, ipv6_prefix: int = 128) -> str:
    """The key a peer address is counted under: IPv4-mapped IPv6 addresses as IPv4, IPv6
    addresses by their ``ipv6_prefix`` network (a /64 is one subscriber's), anything else
    (a host name, a Unix socket) as it is."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if ipv6_prefix < 128:
            return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


class AssociationLimiter:
    """Counts open associations in total and per peer address. ``None`` means no limit."""

    def __init__(
        self,
        max_total: int | None = None,
        max_per_address: int | None = None,
        *,
        ipv6_prefix: int = 128,
    ) -> None:
        for name, value in (("max_total", max_total), ("max_per_address", max_per_address)):
            if value is not None and value < 1:
                raise SecurityConfigError(f"{name} must be at least 1, not {value}")
        if not 0 < ipv6_prefix <= 128:
            raise SecurityConfigError(f"ipv6_prefix must be 1-128, not {ipv6_prefix}")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.ipv6_prefix = ipv6_prefix
        self.total = 0
        self._by_address: Counter[str] = Counter()

    def count(self, host: str) -> int:
        return self._by_address[address_key(host, self.ipv6_prefix)]

    def acquire(self, host: str) -> Decision:
        """Count one more association from ``host`` when the limits allow it; a refusal is not
        counted (do not ``release`` it)."""
        key = address_key(host, self.ipv6_prefix)
        if self.max_total is not None and self.total >= self.max_total:
            return Decision.refuse_association(
                f"{self.max_total} associations are open, the most this node accepts",
                REJECT_LOCAL_LIMIT,
            )
        held = self._by_address[key]
        if self.max_per_address is not None and held >= self.max_per_address:
            return Decision.refuse_association(
                f"{held} associations from {key} are open, the most one address may have",
                REJECT_LOCAL_LIMIT,
            )
        self.total += 1
        self._by_address[key] = held + 1
        return Decision.allow(f"association {held + 1} from {key}")

    def release(self, host: str) -> None:
        """Forget one association from ``host``; releasing one that was never acquired is a
        bug in the caller and raises ``ValueError``."""
        key = address_key(host, self.ipv6_prefix)
        held = self._by_address[key]
        if held <= 0:
            del self._by_address[key]
            raise ValueError(f"release() without acquire() for {key}")
        if held == 1:
            del self._by_address[key]
        else:
            self._by_address[key] = held - 1
        self.total -= 1


# -- sizes ----------------------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: str | int) -> int:
    """A size from a CLI option or the TOML file: bytes as an int, or a string like
    ``"500 MB"``, ``"2GiB"`` (kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    if isinstance(value, bool):
        raise SecurityConfigError(f"a size must be a number of bytes or like '2GiB', not {value}")
    if isinstance(value, int):
        if value < 0:
            raise SecurityConfigError(f"a size cannot be negative: {value}")
        return value
    match = _SIZE.fullmatch(value)
    unit = match[2].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise SecurityConfigError(
            f"{value!r} is not a size (like 1048576, '500MB' or '2GiB'; units: B, kB, MB, GB, "
            "TB, KiB, MiB, GiB, TiB)"
        )
    return int(float(match[1]) * _UNITS[unit])


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"


def free_space(path: str | os.PathLike[str]) -> int:
    """Bytes available to this (unprivileged) process on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def check_free_space(path: str | os.PathLike[str], min_free: int, incoming: int = 0) -> Decision:
    """May a C-STORE be written under ``path``? Refused with 0xA700 when fewer than
    ``min_free`` bytes would be left after ``incoming`` more (0 when the size is unknown, as it
    is until the data set has arrived). An unreadable path is refused too: nothing can be
    written there."""
    try:
        available = free_space(path)
    except OSError as exc:
        return Decision.refuse_request(
            f"cannot check the free space of {os.fspath(path)}: {exc.strerror or exc}",
            Status.OUT_OF_RESOURCES,
        )
    left = available - incoming
    if left < min_free:
        return Decision.refuse_request(
            f"free disk below the minimum of {_mib(min_free)}: {_mib(available)} free on "
            f"{os.fspath(path)}",
            Status.OUT_OF_RESOURCES,
        )
    return Decision.allow(f"{_mib(available)} free")


def check_instance_size(size: int, limit: int | None) -> Decision:
    """Is an instance of ``size`` bytes (so far) within ``limit``? Refused with 0xA700."""
    if limit is None or size <= limit:
        return Decision.allow(f"{size} bytes")
    return Decision.refuse_request(
        f"the instance is larger than the limit of {limit} bytes", Status.OUT_OF_RESOURCES
    )
