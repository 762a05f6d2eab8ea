"""The security settings of ``dicomnet serve`` and the client commands (no process started):
the fields of ``ServeConfig`` from options and the TOML file ([users] and [permissions] inline
or in files of their own, sizes with units), what ``server_security`` makes of them for
``DicomServer``, the errors that name the wrong setting, and ``ClientSecurity``."""

from __future__ import annotations

import ssl
from pathlib import Path

import click
import pytest

from dicomnet.cli.security import ClientSecurity, _client_security, server_security
from dicomnet.cli.serve import ServeConfig, read_config_file, serve
from dicomnet.pdu import UserIdentityRQ
from dicomnet.security.guard import ServerSecurity
from dicomnet.security.users import hash_password
from tests.pki import Pki, make_pki

NOTHING: dict[str, object] = {
    p.name: (() if p.multiple else None)
    for p in serve.params
    if p.name not in ("config_path", "quiet", "verbose")
}
HASH = hash_password("correct horse", ln=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config_from(tmp_path: Path, text: str, **options: object) -> ServeConfig:
    path = tmp_path / "dicomnet.toml"
    path.write_text(text)
    return ServeConfig.merge({**NOTHING, **options}, read_config_file(str(path)))


def test_the_secure_defaults_change_nothing() -> None:
    config = ServeConfig.merge(NOTHING, {})
    assert config.tls_cert is None and config.tls_port is None and not config.require_user
    assert config.users == {} and config.permissions is None and config.audit is None
    assert config.tls_handshake_timeout == 30.0
    assert server_security(config, aet="DICOMNET", storage=Path("s")) == {}


def test_every_security_setting_from_the_file(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        "[serve]\n"
        'tls_cert = "a.pem"\ntls-key = "a.key"\ntls_ca = "ca.pem"\ntls_port = 2762\n'
        "tls_handshake_timeout = 5\nrequire_user = true\n"
        'audit = "audit.jsonl"\naudit_syslog = "127.0.0.1:5514"\n'
        'max_instance_size = "2GiB"\nmin_free_disk = "20GB"\nmax_associations_per_host = 4\n'
        f'[users]\nalice = "{HASH}"\n'
        '[permissions]\nallow_unknown = true\n[permissions.ae.CT1]\nservices = ["store"]\n',
    )
    assert (config.tls_cert, config.tls_key, config.tls_ca) == (
        Path("a.pem"),
        Path("a.key"),
        Path("ca.pem"),
    )
    assert config.tls_port == 2762 and config.tls_handshake_timeout == 5.0
    assert config.require_user and set(config.users) == {"alice"}
    assert config.permissions is not None and set(config.permissions.rules) == {"CT1"}
    assert config.audit == Path("audit.jsonl") and config.audit_syslog == "127.0.0.1:5514"
    assert config.max_instance_size == 2 << 30 and config.min_free_disk == 20 * 10**9
    assert config.max_associations_per_host == 4


def test_tables_in_files_of_their_own(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{HASH}"\n')
    rules = tmp_path / "permissions.toml"
    rules.write_text('[permissions.ae.CT1]\nservices = ["echo"]\n')
    config = ServeConfig.merge({**NOTHING, "users": str(users), "permissions": str(rules)}, {})
    assert set(config.users) == {"alice"}
    assert config.permissions is not None and "CT1" in config.permissions.rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[users]\nalice = "correct horse"\n', "never the password itself"),
        ("[permissions]\nallow = true\n", "unknown key(s) allow"),
        ('[serve]\nmax_instance_size = "lots"\n', "is not a size"),
        ("[serve]\ntls_port = 70000\n", "tls-port must be 0-65535"),
        ('[serve]\naudit_syslog = "loghost"\n', "HOST:PORT"),
        ("[serve]\nmax_associations_per_host = 0\n", "at least 1"),
    ],
)
def test_wrong_values_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        config_from(tmp_path, text)
    assert message in str(error.value)
    assert "correct horse" not in str(error.value)  # a plain-text password is never echoed


def test_what_the_server_gets(tmp_path: Path, pki: Pki) -> None:
    config = ServeConfig.merge(
        {
            **NOTHING,
            "tls_cert": str(pki.server.cert),
            "tls_key": str(pki.server.key),
            "tls_ca": str(pki.ca),
            "tls_port": 2762,
            "audit": str(tmp_path / "audit.jsonl"),
            "max_associations_per_host": 3,
        },
        {},
    )
    kwargs = server_security(config, aet="ARCHIVE", storage=tmp_path)
    assert isinstance(kwargs["ssl"], ssl.SSLContext)
    assert kwargs["ssl"].verify_mode == ssl.CERT_REQUIRED  # --tls-ca: client certificates
    assert kwargs["tls_port"] == 2762 and kwargs["ssl_handshake_timeout"] == 30.0
    security = kwargs["security"]
    assert isinstance(security, ServerSecurity)
    assert security.auditor is not None and security.auditor.node.ae_title == "ARCHIVE"
    assert security.limiter is not None and security.limiter.max_per_address == 3
    security.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tls_port": 2762}, "--tls-port need(s) --tls-cert"),
        ({"tls_ca": "ca.pem", "tls_no_verify": True}, "--tls-ca, --tls-no-verify need(s)"),
        ({"require_user": True}, "--require-user needs users"),
        ({"tls_cert": "/nonexistent.pem"}, "does not exist"),
    ],
)
def test_settings_that_cannot_be_used(options: dict[str, object], message: str) -> None:
    config = ServeConfig.merge({**NOTHING, **options}, {})
    with pytest.raises(ValueError) as error:
        server_security(config, aet="A", storage=Path("s"))
    assert message in str(error.value)


def test_a_rule_naming_a_user_that_does_not_exist(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        f'[users]\nalice = "{HASH}"\n'
        '[permissions.ae.CT1]\nservices = ["echo"]\nusers = ["alice", "bob"]\n',
    )
    with pytest.raises(ValueError, match="'bob' not in the \\[users\\] table"):
        server_security(config, aet="A", storage=tmp_path)


def test_client_security_from_the_options(pki: Pki) -> None:
    nothing = _client_security(False, None, None, None, False, None, None, None)
    assert nothing == ClientSecurity() and nothing.client_kwargs() == {"user_identity": None}
    tls = _client_security(
        False, str(pki.ct1.cert), str(pki.ct1.key), str(pki.ca), False, "localhost", "alice", "pw"
    )
    kwargs = tls.client_kwargs()
    assert isinstance(kwargs["ssl"], ssl.SSLContext) and kwargs["server_hostname"] == "localhost"
    assert kwargs["user_identity"] == UserIdentityRQ.password("alice", "pw")
    assert "pw" not in repr(tls)
    only_user = _client_security(True, None, None, None, True, None, "bob", None)
    assert only_user.identity == UserIdentityRQ.username("bob")
    assert only_user.tls is not None and only_user.tls.no_verify
    with pytest.raises(click.UsageError, match="--password needs --user"):
        _client_security(False, None, None, None, False, None, None, "pw")
    with pytest.raises(click.UsageError, match="does not exist"):
        _client_security(False, None, None, "/nonexistent-ca.pem", False, None, None, None)
