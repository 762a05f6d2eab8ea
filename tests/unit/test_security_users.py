"""security.users: scrypt password hashes, the `dicomnet passwd` reader, the [users] table
loader, and the user identity decision (PS3.7 D.3.3.7)."""

from __future__ import annotations

import io
import struct

import pytest

from dicomnet.errors import PDUError
from dicomnet.pdu import (
    A_ASSOCIATE_RQ,
    ImplementationClassUID,
    MaximumLength,
    PresentationContextRQItem,
    UserIdentityRQ,
    UserInformation,
    decode,
    encode,
)
from dicomnet.security import users as users_module
from dicomnet.security.decisions import REJECT_AUTHENTICATION, SecurityConfigError
from dicomnet.security.users import (
    IdentityType,
    PasswordHash,
    TokenResult,
    decide_identity,
    hash_password,
    load_users,
    passwd_command,
    read_password,
    verify_password,
)

FAST = {"ln": 10, "r": 8, "p": 1}  # cheap parameters for the many decisions below


@pytest.fixture(scope="module")
def table() -> dict[str, PasswordHash]:
    return load_users(
        {
            "alice": hash_password("correct horse", **FAST),
            "bób": hash_password("pässwörd", **FAST),
        }
    )


# -- hashes ---------------------------------------------------------------------------------------


def test_rfc7914_vector() -> None:
    # RFC 7914 §12: scrypt(P="password", S="NaCl", N=1024, r=8, p=16, dkLen=64).
    expected = bytes.fromhex(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )
    vector = PasswordHash(10, 8, 16, b"NaCl", expected)
    assert vector.verify("password")
    assert not vector.verify("Password")
    assert str(vector).startswith("$scrypt$ln=10,r=8,p=16$TmFDbA$/bq+HJ00cgB4Vu")


def test_default_hash_round_trip() -> None:
    stored = hash_password("s3cr3t")
    assert stored.startswith("$scrypt$ln=15,r=8,p=1$")
    parsed = PasswordHash.parse(stored)
    assert len(parsed.salt) == 16 and len(parsed.digest) == 32
    assert str(parsed) == stored
    assert verify_password("s3cr3t", stored)
    assert not verify_password("s3cr3T", stored)


def test_salts_differ() -> None:
    one, two = hash_password("same", **FAST), hash_password("same", **FAST)
    assert one != two
    assert verify_password("same", one) and verify_password("same", two)


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("secret", "not a scrypt password hash"),
        ("$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43, "outside the accepted ranges"),
        ("$scrypt$ln=20,r=32,p=1$c2FsdHNhbHQ$" + "A" * 43, "more than"),
        ("$scrypt$ln=15,r=8,p=1$c2FsdA$" + "A" * 43, "too short"),
        ("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$A", "bad base64"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SecurityConfigError, match=message):
        PasswordHash.parse(text)


# -- `dicomnet passwd` ----------------------------------------------------------------------------


def test_passwd_command_prints_a_hash_of_the_first_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert passwd_command(io.StringIO("pässwörd\nignored\n"), out, err) == 0
    printed = out.getvalue()
    assert printed.endswith("\n") and printed.count("\n") == 1
    assert verify_password("pässwörd", printed.strip())
    assert "pässwörd" not in printed + err.getvalue()


def test_passwd_command_without_password() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert passwd_command(io.StringIO(""), out, err) == 2
    assert out.getvalue() == ""
    assert "no password" in err.getvalue()


def test_read_password_strips_only_the_line_ending() -> None:
    assert read_password(io.StringIO(" with spaces \r\n")) == " with spaces "


# -- the [users] table ----------------------------------------------------------------------------


def test_load_users_refuses_plain_passwords_without_echoing_them() -> None:
    with pytest.raises(SecurityConfigError, match="dicomnet passwd") as info:
        load_users({"alice": "hunter2"})
    assert "hunter2" not in str(info.value)
    assert "'alice'" in str(info.value)


def test_load_users_errors() -> None:
    with pytest.raises(SecurityConfigError, match="must be a table"):
        load_users(["alice"])  # type: ignore[arg-type]
    with pytest.raises(SecurityConfigError, match="not int"):
        load_users({"alice": 5})
    with pytest.raises(SecurityConfigError, match="non-empty"):
        load_users({"": hash_password("x", **FAST)})
    with pytest.raises(SecurityConfigError, match=r"\[users\] 'alice': scrypt parameters"):
        load_users({"alice": "$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43})


# -- the decision ---------------------------------------------------------------------------------


def rq(kind: int, primary: bytes, secondary: bytes = b"", positive: bool = True) -> UserIdentityRQ:
    return UserIdentityRQ(kind, positive, primary, secondary)


def test_no_identity(table: dict[str, PasswordHash]) -> None:
    assert decide_identity(None, table).accepted
    refused = decide_identity(None, table, require=True)
    assert not refused.accepted
    assert refused.reject == REJECT_AUTHENTICATION
    assert refused.reject.to_pdu().source == 2  # ACSE related function (PS3.7 D.3.3.7)


def test_not_checked_without_users() -> None:
    decision = decide_identity(rq(2, b"alice", b"whatever"), {})
    assert decision.accepted and not decision.verified
    assert decision.response is None  # no AC sub-item: the requestor learns nothing was checked


def test_username_and_passcode(table: dict[str, PasswordHash]) -> None:
    decision = decide_identity(rq(2, b"alice", b"correct horse"), table, require=True)
    assert decision.accepted and decision.verified
    assert decision.username == "alice"
    assert decision.response == b""  # D.3.3.7.2: empty server response for type 2
    quiet = decide_identity(rq(2, b"alice", b"correct horse", positive=False), table)
    assert quiet.accepted and quiet.response is None
    utf8 = decide_identity(rq(2, "bób".encode(), "pässwörd".encode()), table)
    assert utf8.accepted and utf8.username == "bób"


def test_wrong_passcode_is_rejected_and_never_shown(table: dict[str, PasswordHash]) -> None:
    decision = decide_identity(rq(2, b"alice", b"Tr0ub4dor&3"), table)  # not required: still no
    assert not decision.accepted
    assert decision.reject == REJECT_AUTHENTICATION
    assert decision.reason == "wrong passcode for user 'alice'"
    assert "Tr0ub4dor" not in repr(decision)
    assert not decide_identity(rq(2, b"alice", b""), table).accepted


def test_unknown_user_costs_a_verification(
    table: dict[str, PasswordHash], monkeypatch: pytest.MonkeyPatch
) -> None:
    burned: list[tuple[bytes, PasswordHash | None]] = []
    monkeypatch.setattr(users_module, "_burn", lambda *args: burned.append(args))
    decision = decide_identity(rq(2, b"mallory", b"guess"), table)
    assert not decision.accepted and decision.reason == "unknown user 'mallory'"
    assert burned == [(b"guess", table["alice"])]  # the same cost as a known user's check


def test_burn_costs_a_verification_with_the_given_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int, int]] = []
    real = users_module._scrypt

    def spy(password: bytes, salt: bytes, ln: int, r: int, p: int, length: int) -> bytes:
        calls.append((ln, r, p))
        return real(password, salt, ln, r, p, length)

    monkeypatch.setattr(users_module, "_scrypt", spy)
    users_module._burn(b"x", PasswordHash(11, 4, 2, b"s" * 16, b"h" * 32))
    users_module._burn(b"x", None)
    assert calls == [(11, 4, 2), (15, 8, 1)]


def test_username_only(table: dict[str, PasswordHash]) -> None:
    assert decide_identity(rq(1, b"alice"), table).accepted  # ignored
    assert not decide_identity(rq(1, b"alice"), table, require=True).accepted
    basic = decide_identity(rq(1, b"alice"), table, accept_username_only=True)
    assert basic.accepted and basic.username == "alice" and basic.response == b""
    assert not decide_identity(rq(1, b"eve"), table, accept_username_only=True).accepted


def test_not_utf8_username(table: dict[str, PasswordHash]) -> None:
    decision = decide_identity(rq(2, b"\xff\xfe", b"x"), table)
    assert not decision.accepted and "UTF-8" in decision.reason


def test_tokens() -> None:
    def kerberos(ticket: bytes) -> TokenResult:
        if ticket == b"good-ticket":
            return TokenResult(True, "carol", b"server-ticket")
        return TokenResult(False, reason="ticket expired")

    def broken(_token: bytes) -> TokenResult:
        raise RuntimeError("bug")

    validators = {IdentityType.KERBEROS: kerberos, IdentityType.JWT: broken}
    ok = decide_identity(rq(3, b"good-ticket"), {}, validators=validators)
    assert ok.accepted and ok.username == "carol" and ok.response == b"server-ticket"
    bad = decide_identity(rq(3, b"old-ticket"), {}, validators=validators)
    assert not bad.accepted and bad.reason == "Kerberos service ticket is not valid: ticket expired"
    crashed = decide_identity(rq(5, b"token"), {}, validators=validators)
    assert not crashed.accepted and "RuntimeError" in crashed.reason
    # SAML without a validator: ignored unless required
    assert decide_identity(rq(4, b"<saml/>"), {}, validators=validators).accepted
    assert not decide_identity(rq(4, b"<saml/>"), {}, require=True).accepted
    # an identity type the standard does not define
    assert not decide_identity(rq(9, b"?"), {}, require=True).accepted


# -- identity items of 65,535 bytes ---------------------------------------------------------------


def test_huge_identity_fields_are_decided_and_cut_in_the_reason(
    table: dict[str, PasswordHash],
) -> None:
    name = b"a" * 65_531  # a sub-item value of 65,535 bytes: 1 + 1 + 2 + 65,531 + 2 + 0
    decision = decide_identity(rq(1, name), table, accept_username_only=True)
    assert not decision.accepted
    assert decision.username is not None and len(decision.username) <= 67
    assert len(decision.reason) < 120
    passcode = decide_identity(rq(2, b"alice", b"p" * 65_529), table)
    assert not passcode.accepted and len(passcode.reason) < 120


def test_largest_identity_that_fits_a_user_information_item(
    table: dict[str, PasswordHash],
) -> None:
    """The user information item's length is 16 bits, so the identity sub-item shares 65,535
    bytes with the other sub-items; the largest one that fits survives encode/decode and is
    decided like any other."""
    others = [MaximumLength(16384), ImplementationClassUID("1.2.3.4")]
    room = 0xFFFF - (4 + 4) - (4 + 7) - 4 - 6  # item headers and the identity's own fields
    identity = UserIdentityRQ(2, True, b"alice", b"x" * (room - 5))
    pdu = A_ASSOCIATE_RQ(
        called_ae_title="DICOMNET",
        calling_ae_title="MODALITY",
        presentation_contexts=[
            PresentationContextRQItem(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])
        ],
        user_information=UserInformation([*others, identity]),
    )
    raw = encode(pdu)
    decoded = decode(raw)
    assert isinstance(decoded, A_ASSOCIATE_RQ)
    got = decoded.user_information.user_identity_rq
    assert got is not None and len(got.secondary_field) == room - 5
    assert not decide_identity(got, table).accepted  # wrong passcode, decided without trouble
    too_big = UserIdentityRQ(2, True, b"alice", b"x" * (room - 4))
    pdu.user_information = UserInformation([*others, too_big])
    with pytest.raises(PDUError, match="exceeds 65535"):
        encode(pdu)


def test_identity_sub_item_claiming_65535_bytes_is_a_pdu_error() -> None:
    """A sub-item whose 16-bit length says 65,535 inside a user information item that cannot
    hold it: the reader refuses it by its lengths, before any decision."""
    good = A_ASSOCIATE_RQ(
        called_ae_title="DICOMNET",
        calling_ae_title="MODALITY",
        presentation_contexts=[
            PresentationContextRQItem(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])
        ],
        user_information=UserInformation([MaximumLength(16384), UserIdentityRQ(1, False, b"a")]),
    )
    raw = bytearray(encode(good))
    at = raw.rindex(b"\x58\x00")  # the identity sub-item header
    struct.pack_into(">H", raw, at + 2, 0xFFFF)
    with pytest.raises(PDUError):
        decode(bytes(raw))
