"""security.limits: the association counter, sizes, the free-space and instance-size checks."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomnet.security import limits
from dicomnet.security.decisions import SecurityConfigError
from dicomnet.security.limits import (
    AssociationLimiter,
    address_key,
    check_free_space,
    check_instance_size,
    parse_size,
)


def test_per_address_limit() -> None:
    limiter = AssociationLimiter(max_per_address=2)
    assert limiter.acquire("10.0.0.5").allowed
    assert limiter.acquire("::ffff:10.0.0.5").allowed  # the same peer over a dual-stack socket
    third = limiter.acquire("10.0.0.5")
    assert not third.allowed
    assert third.reason == "2 associations from 10.0.0.5 are open, the most one address may have"
    assert third.reject == (2, 3, 2)  # transient, presentation layer, local limit exceeded
    assert third.reject is not None and "local limit exceeded" in third.reject.describe()
    assert limiter.acquire("10.0.0.6").allowed  # everyone else keeps being served
    assert limiter.count("10.0.0.5") == 2 and limiter.total == 3
    limiter.release("10.0.0.5")
    assert limiter.acquire("10.0.0.5").allowed


def test_total_limit() -> None:
    limiter = AssociationLimiter(max_total=2, max_per_address=5)
    assert limiter.acquire("a").allowed and limiter.acquire("b").allowed
    refused = limiter.acquire("c")
    assert not refused.allowed and "2 associations are open" in refused.reason
    assert limiter.total == 2  # the refusal is not counted
    limiter.release("a")
    assert limiter.acquire("c").allowed


def test_release_without_acquire_is_a_bug() -> None:
    limiter = AssociationLimiter()
    with pytest.raises(ValueError, match="without acquire"):
        limiter.release("10.0.0.1")
    assert limiter.total == 0 and limiter.count("10.0.0.1") == 0


def test_ipv6_prefix() -> None:
    assert address_key("2001:db8::1") == "2001:db8::1"
    assert address_key("2001:db8::1", 64) == "2001:db8::/64"
    assert address_key("fe80::1%eth0") == "fe80::1"
    assert address_key("not an address") == "not an address"
    limiter = AssociationLimiter(max_per_address=1, ipv6_prefix=64)
    assert limiter.acquire("2001:db8::1").allowed
    assert not limiter.acquire("2001:db8::ffff").allowed  # same /64


def test_bad_limits() -> None:
    with pytest.raises(SecurityConfigError, match="at least 1"):
        AssociationLimiter(max_per_address=0)
    with pytest.raises(SecurityConfigError, match="1-128"):
        AssociationLimiter(ipv6_prefix=0)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=60))
def test_counter_never_exceeds_its_limits(steps: list[tuple[bool, str]]) -> None:
    limiter = AssociationLimiter(max_total=4, max_per_address=2)
    held: list[str] = []
    for acquire, host in steps:
        if acquire:
            if limiter.acquire(host).allowed:
                held.append(host)
        elif host in held:
            held.remove(host)
            limiter.release(host)
        assert limiter.total == len(held) <= 4
        assert all(limiter.count(h) == held.count(h) <= 2 for h in "abc")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        ("500MB", 500_000_000),
        ("500 mb", 500_000_000),
        ("2GiB", 2 << 30),
        ("1.5 KiB", 1536),
        ("10kB", 10_000),
        ("3 TiB", 3 << 40),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5 XB", "-1", "1e9", True, -5])
def test_parse_size_errors(text: str | int) -> None:
    with pytest.raises(SecurityConfigError):
        parse_size(text)


Usage = namedtuple("Usage", "total used free")


def test_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_free_space(tmp_path, 0).allowed
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda _p: Usage(100 << 30, 0, 300 << 20))
    refused = check_free_space(tmp_path, 1 << 30)
    assert not refused.allowed and refused.status == 0xA700
    assert refused.reason == (
        f"free disk below the minimum of 1024 MiB: 300 MiB free on {os.fspath(tmp_path)}"
    )
    assert check_free_space(tmp_path, 200 << 20).allowed
    assert not check_free_space(tmp_path, 200 << 20, incoming=150 << 20).allowed


def test_free_space_of_a_missing_folder_is_refused(tmp_path: Path) -> None:
    refused = check_free_space(tmp_path / "gone", 0)
    assert not refused.allowed and refused.status == 0xA700
    assert "cannot check the free space" in refused.reason


def test_instance_size() -> None:
    assert check_instance_size(10, None).allowed
    assert check_instance_size(10, 10).allowed
    over = check_instance_size(11, 10)
    assert not over.allowed and over.status == 0xA700
