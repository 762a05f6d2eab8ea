"""``ServeConfig``, the settings of ``dicomnet serve`` (no process started): the defaults, the
command line over the TOML file over the defaults, the file's spellings (``-``/``_``, a
``[peers]`` table, ``peer``), and errors that name the wrong option."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from dicomnet.archive.storage import DEFAULT_LAYOUT
from dicomnet.cli.serve import ServeConfig, parse_peers, read_config_file, serve

#: What ``serve`` hands to ``ServeConfig.merge`` when no option is given.
NOTHING: dict[str, object] = {
    p.name: (() if p.multiple else None)
    for p in serve.params
    if p.name not in ("config_path", "quiet", "verbose")
}


def test_every_option_is_a_field_and_every_field_an_option() -> None:
    fields = set(ServeConfig.__dataclass_fields__) - {"web"}  # the file's [web] table only
    assert set(NOTHING) == fields


def test_the_web_table_and_options(tmp_path: Path) -> None:
    """[web] beside [serve] (or in a top-level file) goes to WebConfig.from_mapping; the
    command line's --http-port wins over its port; the web host is the DICOM host unless set."""
    from dicomnet.cli.serve_web import web_config

    assert ServeConfig().http_port is None and not ServeConfig().no_web
    path = tmp_path / "dicomnet.toml"
    path.write_text(
        '[serve]\nhost = "127.0.0.3"\n[web]\nport = 9000\npublic-url = "https://pacs.example/"\n'
        'cors_origins = ["https://viewer.example"]\nmax-stow-bytes = 1048576\n'
    )
    config = ServeConfig.merge({**NOTHING, "http_port": 9001}, read_config_file(str(path)))
    web = web_config(config.web, host=config.host, http_port=config.http_port, viewer=None,
                     viewer_dir=None, fsync=True)  # fmt: skip
    assert (web.host, web.port, web.public_url) == ("127.0.0.3", 9001, "https://pacs.example")
    assert web.cors_origins == ("https://viewer.example",) and web.max_stow_bytes == 1 << 20
    path.write_text('http-port = 0\nviewer = "ohif"\n[web]\nhost = "::1"\n')
    config = ServeConfig.merge(NOTHING, read_config_file(str(path)))
    assert config.http_port == 0 and config.viewer == "ohif" and config.web == {"host": "::1"}
    path.write_text("[serve]\nport = 104\n[web]\ncolour = 1\n")
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        ServeConfig.merge(NOTHING, read_config_file(str(path)))


def test_defaults() -> None:
    config = ServeConfig.merge(NOTHING, {})
    assert config == ServeConfig()
    assert (config.host, config.port, config.aet) == ("127.0.0.1", 11112, "DICOMNET")
    assert config.storage == Path("dicom-store") and config.layout == DEFAULT_LAYOUT
    assert (config.workers, config.async_ops, config.max_associations) == (1, 8, 64)
    assert (config.shutdown_timeout, config.no_fsync, config.no_index) == (10.0, False, False)
    assert config.allow_ae == () and config.peers == {}


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dicomnet.toml"
    path.write_text(
        "[serve]\n"
        'port = 104\naet = "FILE"\nasync-ops = 3\nallow_ae = "CT1"\nno-fsync = true\n'
        'shutdown_timeout = 2\nstorage = "/srv/dicom"\npeer = ["WS=10.0.0.7:104"]\n'
    )
    options = {**NOTHING, "port": 11113, "allow_ae": ("MR1", "MR2")}
    config = ServeConfig.merge(options, read_config_file(str(path)))
    assert config.port == 11113 and config.allow_ae == ("MR1", "MR2")  # the command line
    assert config.aet == "FILE" and config.async_ops == 3 and config.no_fsync  # the file
    assert config.shutdown_timeout == 2.0 and isinstance(config.shutdown_timeout, float)
    assert config.storage == Path("/srv/dicom")
    assert config.peers == {"WS": ("10.0.0.7", 104)}
    assert config.host == "127.0.0.1"  # neither: the default


def test_a_top_level_file_and_a_peers_table(tmp_path: Path) -> None:
    path = tmp_path / "dicomnet.toml"
    path.write_text('workers = 2\n[peers]\nWS = "[::1]:11112"\n')
    config = ServeConfig.merge(NOTHING, read_config_file(str(path)))
    assert config.workers == 2 and config.peers == {"WS": ("::1", 11112)}
    path.write_text('[serve]\naet = "A"\n[peers]\nWS = "host:104"\n')
    assert ServeConfig.merge(NOTHING, read_config_file(str(path))).peers == {"WS": ("host", 104)}


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ({"workers": "many"}, "workers must be a number, not 'many'"),
        ({"workers": 0}, "workers must be at least 1, not 0"),
        ({"port": True}, "port must be a number, not True"),
        ({"max_associations": [1]}, "max-associations must be a number, not [1]"),
        ({"async_ops": 70000}, "async-ops must be 0-65535, not 70000"),
        ({"peers": ["WS"]}, "peer 'WS' is not AE=HOST:PORT"),
    ],
)
def test_wrong_values_name_the_option(file: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        ServeConfig.merge(NOTHING, file)
    assert message in str(caught.value)


def test_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('colour = "blue"\n')
    with pytest.raises(click.BadParameter, match=r"unknown option\(s\) colour; known: "):
        read_config_file(str(path))
    path.write_text("[serve\n")
    with pytest.raises(click.BadParameter, match=r"bad\.toml"):
        read_config_file(str(path))
    assert read_config_file(None) == {}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("WS=host", "is not AE=HOST:PORT"),
        ("=host:104", "is not AE=HOST:PORT"),
        ("WS=host:0", "port out of range"),
        ("A_TITLE_LONGER_THAN_16=host:104", "is not AE=HOST:PORT"),
    ],
)
def test_bad_peers(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_peers("peers", value)
