"""Issue 10: ``dicomnet serve --store-as SYNTAX`` (and its TOML key) stores images
lossless-compressed, the index records the stored syntax, and a retrieve by a peer that takes
only uncompressed syntaxes gets them back decompressed with the same pixels (round trip).
Lossy-compressed images and data sets without pixels are kept as they arrived; a lossy or
unknown syntax is a usage error."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnet.cli.serve import ServeConfig, read_config_file
from tests.cli.conftest import Mixed, Serve, dicomnet
from tests.helpers import require_tool, run

np = pytest.importorskip("numpy")

from dicomnet.pixels import can_encode  # noqa: E402

pytestmark = pytest.mark.skipif(
    not can_encode("jpeg-ls-lossless"), reason="the codecs extra is not installed"
)

JLS = "1.2.840.10008.1.2.4.80"
#: name -> the transfer syntax the archive keeps it in with --store-as jpeg-ls-lossless
EXPECTED = {
    "CT_small.dcm": JLS,  # explicit VR little endian: compressed
    "MR_small_RLE.dcm": JLS,  # RLE: transcoded losslessly
    "ExplVR_BigEnd.dcm": JLS,  # big endian: compressed
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # lossy already: kept
}
REPORT = "reportsi.dcm"  # no pixels: kept in its own syntax


def _index_syntaxes(storage: Path) -> dict[str, str]:
    with sqlite3.connect(storage / ".dicomnet-index.sqlite") as db:
        rows = db.execute("select sop_instance_uid, transfer_syntax_uid from instance").fetchall()
    return {str(uid): str(ts) for uid, ts in rows}


def test_store_as_round_trip(serve: Callable[..., Serve], mixed: Mixed, tmp_path: Path) -> None:
    server = serve("--store-as", "jpeg-ls-lossless", "--no-fsync", "--aet", "ARCHIVE")
    files = [mixed.folder / name for name in EXPECTED] + [mixed.folder / "sub" / REPORT]
    result = dicomnet("store", "127.0.0.1", str(server.port), *map(str, files), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    originals = {str(dcmread(f).SOPInstanceUID): (f.name, dcmread(f)) for f in files}
    stored = {p.stem: dcmread(p) for p in server.stored()}
    assert sorted(stored) == sorted(originals)
    index = _index_syntaxes(server.storage)
    for uid, (name, original) in originals.items():
        expected = EXPECTED.get(name, str(original.file_meta.TransferSyntaxUID))
        assert stored[uid].file_meta.TransferSyntaxUID == expected, name
        assert index[uid] == expected, name  # the index records the stored syntax
        if "PixelData" in original:
            assert np.array_equal(stored[uid].pixel_array, original.pixel_array), name
    assert "converted from Explicit VR Little Endian to JPEG-LS Lossless" in server.log
    # Retrieved by a peer that takes uncompressed syntaxes only: decompressed, same pixels.
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    studies = {str(ds.StudyInstanceUID) for name, ds in originals.values() if name in EXPECTED}
    for study in sorted(studies):
        got = run(
            [
                require_tool("getscu"),
                "-S",
                "-aec",
                "ARCHIVE",
                "-od",
                str(out_dir),
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                "127.0.0.1",
                str(server.port),
            ]
        )
        assert got.returncode == 0, got.stdout + got.stderr
    arrived = [dcmread(p) for p in out_dir.iterdir()]
    assert len(arrived) == len(EXPECTED)
    for ds in arrived:
        name, original = originals[str(ds.SOPInstanceUID)]
        if EXPECTED.get(name) == JLS:
            assert ds.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
            assert np.array_equal(ds.pixel_array, original.pixel_array), name


def test_store_as_in_the_config_file_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('[serve]\nstore-as = "jpeg2000-lossless"\n')
    config = ServeConfig.merge({}, read_config_file(str(path)))
    assert config.store_as == "1.2.840.10008.1.2.4.90"
    assert ServeConfig.merge({}, {}).store_as == ""
    assert ServeConfig.merge({"store_as": "1.2.840.10008.1.2.5"}, {}).store_as == (
        "1.2.840.10008.1.2.5"
    )
    for value, why in (
        ("jpeg-baseline", "is lossy; an archive stores losslessly"),
        ("jpeg-xl", "unknown transfer syntax"),
    ):
        with pytest.raises(ValueError, match=why):
            ServeConfig.merge({"store_as": value}, {})
    result = dicomnet("serve", "--store-as", "jpeg2000", "--storage", str(tmp_path / "s"))
    assert result.returncode == 2 and "is lossy" in result.stderr
