"""dicomnet.requests: the contexts each SCU request proposes, the command and data set it becomes
on the contexts the peer accepted (PS3.7 §9.1), the default C-GET storage contexts, and the
names dicomnet.client and dicomnet keep re-exporting. No network."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

import dicomnet
import dicomnet.client
from dicomnet.dataset import FileInfo, decode_dataset, read_file_info
from dicomnet.dimse import commands as c
from dicomnet.errors import NegotiationError
from dicomnet.negotiation import Negotiated, NegotiatedContext
from dicomnet.pixels import Action, TranscodePolicy, TranscodePool, dataset_mislabelled
from dicomnet.requests import (
    CEchoRequest,
    CFindRequest,
    CGetRequest,
    CMoveRequest,
    CStoreRequest,
    get_storage_contexts,
    instance_uids,
)
from dicomnet.uids import STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE, VERIFICATION
from tests.helpers import make_ct, write_ct

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _negotiated(*contexts: tuple[str, str]) -> Negotiated:
    """Contexts 1, 3, 5... accepted with the given (abstract syntax, transfer syntax)."""
    accepted = {
        2 * i + 1: NegotiatedContext(2 * i + 1, sop_class, ts)
        for i, (sop_class, ts) in enumerate(contexts)
    }
    return Negotiated(accepted, peer_max_pdu_length=16384, our_max_pdu_length=16384)


# -- proposed contexts ------------------------------------------------------------------------------


@pytest.mark.parametrize("from_dataset", [False, True])
@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        # Explicit VR Little Endian's own context is the fallback itself.
        (ExplicitVRLittleEndian, [[ExplicitVRLittleEndian, ImplicitVRLittleEndian]]),
        # Other syntaxes alone (an acceptor that prefers another one cannot make us convert a
        # file it would have taken as it is, issue 10 bug 2), then the uncompressed fallback.
        (
            ImplicitVRLittleEndian,
            [[ImplicitVRLittleEndian], [ExplicitVRLittleEndian, ImplicitVRLittleEndian]],
        ),
        (
            ExplicitVRBigEndian,
            [[ExplicitVRBigEndian], [ExplicitVRLittleEndian, ImplicitVRLittleEndian]],
        ),
        (
            DeflatedExplicitVRLittleEndian,
            [[DeflatedExplicitVRLittleEndian], [ExplicitVRLittleEndian, ImplicitVRLittleEndian]],
        ),
    ],
)
def test_store_proposes_its_syntax_then_the_uncompressed_fallback(
    ts: str, from_dataset: bool, expected: list[list[str]]
) -> None:
    request = CStoreRequest(
        sop_class_uid=CTImageStorage,
        transfer_syntax=ts,
        dataset=Dataset() if from_dataset else None,
    )
    contexts = request.contexts()
    assert {ctx.abstract_syntax for ctx in contexts} == {CTImageStorage}
    assert [list(ctx.transfer_syntaxes) for ctx in contexts] == expected


def test_store_of_compressed_data_proposes_the_fallback_only_when_it_can_be_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dicomnet.pixels.policy as policy

    request = CStoreRequest(sop_class_uid=CTImageStorage, transfer_syntax=JPEGBaseline8Bit)
    monkeypatch.setattr(policy, "can_decode", lambda ts: True)
    assert [list(c.transfer_syntaxes) for c in request.contexts()] == [
        [JPEGBaseline8Bit],
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    ]
    monkeypatch.setattr(policy, "can_decode", lambda ts: False)
    assert [list(c.transfer_syntaxes) for c in request.contexts()] == [[JPEGBaseline8Bit]]


def test_store_proposes_as_before_without_the_fallback() -> None:
    own = TranscodePolicy(propose_fallback=False, decompress=False)
    request = CStoreRequest(sop_class_uid=CTImageStorage, transfer_syntax=ImplicitVRLittleEndian)
    request.policy = own
    [ctx] = request.contexts()
    assert list(ctx.transfer_syntaxes) == [ImplicitVRLittleEndian, ExplicitVRLittleEndian]


def test_query_requests_propose_their_model_and_a_get_its_storage_contexts() -> None:
    storage = get_storage_contexts([CTImageStorage], compressed=False)
    get = CGetRequest(model=STUDY_ROOT_GET, storage_contexts=storage)
    assert [ctx.abstract_syntax for ctx in get.contexts()] == [STUDY_ROOT_GET, CTImageStorage]
    [find] = CFindRequest(model=STUDY_ROOT_FIND).contexts()
    assert list(find.transfer_syntaxes) == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert CEchoRequest().contexts()[0].abstract_syntax == VERIFICATION


def test_default_get_contexts_fit_in_one_association() -> None:
    contexts = get_storage_contexts()
    assert len(contexts) < 128
    assert all(ctx.scp_role is True and ctx.scu_role is False for ctx in contexts)
    ct = [ctx for ctx in contexts if ctx.abstract_syntax == CTImageStorage]
    assert len(ct) == 2  # uncompressed, and compressed


def test_get_contexts_for_named_classes() -> None:
    contexts = get_storage_contexts([CTImageStorage, BASIC_TEXT_SR])
    # An image class gets a second, compressed context; a report does not.
    assert [ctx.abstract_syntax for ctx in contexts] == [
        CTImageStorage,
        CTImageStorage,
        BASIC_TEXT_SR,
    ]
    assert JPEGBaseline8Bit in contexts[1].transfer_syntaxes
    assert len(get_storage_contexts([CTImageStorage], compressed=False)) == 1


# -- the command and data set on the accepted contexts --------------------------------------------


def test_echo_command_carries_the_message_id() -> None:
    ctx, msg, dataset = CEchoRequest(message_id=65535).outgoing(
        _negotiated((VERIFICATION, ImplicitVRLittleEndian))
    )
    assert ctx.context_id == 1 and dataset is None
    assert msg == c.CEchoRQ(message_id=65535, affected_sop_class_uid=VERIFICATION)


def test_query_commands_and_identifier() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "P1"
    negotiated = _negotiated(
        (VERIFICATION, ImplicitVRLittleEndian),
        (STUDY_ROOT_FIND, ImplicitVRLittleEndian),
        (STUDY_ROOT_MOVE, ExplicitVRLittleEndian),
    )
    find = CFindRequest(message_id=7, identifier=identifier, model=STUDY_ROOT_FIND, priority=1)
    ctx, msg, dataset = find.outgoing(negotiated)
    assert find.context_id == ctx.context_id == 3  # where a C-CANCEL-RQ goes too
    assert msg == c.CFindRQ(message_id=7, affected_sop_class_uid=STUDY_ROOT_FIND, priority=1)
    assert isinstance(dataset, bytes)
    assert decode_dataset(dataset, ImplicitVRLittleEndian).PatientID == "P1"
    move = CMoveRequest(message_id=8, model=STUDY_ROOT_MOVE, destination="STORESCP")
    ctx, msg, dataset = move.outgoing(negotiated)
    assert ctx.context_id == 5
    assert isinstance(msg, c.CMoveRQ) and msg.move_destination == "STORESCP"
    assert msg.message_id == 8
    with pytest.raises(NegotiationError, match=STUDY_ROOT_GET):
        CGetRequest(model=STUDY_ROOT_GET).outgoing(negotiated)


def test_store_streams_a_file_in_its_own_syntax(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    ds = write_ct(path, rows=8, columns=8)
    request = CStoreRequest.from_file(path, move_originator_ae_title="MOVESCU")
    request.message_id = 3
    ctx, msg, dataset = request.outgoing(
        _negotiated(
            (CTImageStorage, ImplicitVRLittleEndian), (CTImageStorage, request.transfer_syntax)
        )
    )
    assert ctx.context_id == 3 and dataset is request.file
    assert isinstance(msg, c.CStoreRQ)
    assert msg.affected_sop_instance_uid == ds.SOPInstanceUID
    assert msg.move_originator_aet == "MOVESCU" and msg.message_id == 3


def test_store_reencodes_uncompressed_data_into_the_accepted_syntax(tmp_path: Path) -> None:
    ds = make_ct(rows=8, columns=8)
    request = CStoreRequest.from_dataset(ds)
    assert request.transfer_syntax == ExplicitVRLittleEndian
    ctx, _, dataset = request.outgoing(_negotiated((CTImageStorage, ImplicitVRLittleEndian)))
    assert ctx.transfer_syntax == ImplicitVRLittleEndian and isinstance(dataset, bytes)
    assert decode_dataset(dataset, ImplicitVRLittleEndian).PixelData == ds.PixelData


def test_store_needs_prepare_to_convert_and_a_context_to_send() -> None:
    compressed = CStoreRequest(
        sop_class_uid=CTImageStorage, transfer_syntax=JPEGBaseline8Bit, dataset=Dataset()
    )
    with pytest.raises(NegotiationError, match=r"must be converted \(decompress"):
        compressed.outgoing(_negotiated((CTImageStorage, ExplicitVRLittleEndian)))
    with pytest.raises(NegotiationError, match="no presentation context"):
        compressed.outgoing(_negotiated((VERIFICATION, ExplicitVRLittleEndian)))


def test_store_chooses_among_all_accepted_contexts_of_its_sop_class(tmp_path: Path) -> None:
    """Issue 10, bug 1: the first accepted context of the SOP class is JPEG 2000, a later one
    takes the file's own syntax."""
    path = tmp_path / "ct.dcm"
    write_ct(path, rows=8, columns=8)
    request = CStoreRequest.from_file(path)
    ctx, _, dataset = request.outgoing(
        _negotiated(
            (CTImageStorage, "1.2.840.10008.1.2.4.90"),
            (CTImageStorage, ImplicitVRLittleEndian),
            (CTImageStorage, ExplicitVRLittleEndian),
        )
    )
    assert ctx.context_id == 5 and dataset is request.file


@pytest.fixture
async def pool() -> AsyncIterator[TranscodePool]:
    async with TranscodePool(max_workers=1) as workers:
        yield workers


async def test_prepare_re_encodes_into_a_temporary_file_removed_by_cleanup(
    tmp_path: Path, pool: TranscodePool
) -> None:
    path = tmp_path / "ct.dcm"
    ds = make_ct(rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.save_as(path, enforce_file_format=True)
    original = path.read_bytes()
    spool = tmp_path / "spool"
    spool.mkdir()
    request = CStoreRequest.from_file(path)
    negotiated = _negotiated(
        (CTImageStorage, "1.2.840.10008.1.2.4.90"), (CTImageStorage, ImplicitVRLittleEndian)
    )
    await request.prepare(negotiated, pool=pool, temp_dir=spool)
    assert request.choice is not None and request.choice.action is Action.REENCODE
    assert request.transcoded is not None and request.transcoded.action is Action.REENCODE
    ctx, msg, payload = request.outgoing(negotiated)
    assert ctx.context_id == 3 and isinstance(payload, FileInfo)
    assert payload.path.parent == spool and payload.transfer_syntax == ImplicitVRLittleEndian
    assert isinstance(msg, c.CStoreRQ) and msg.affected_sop_instance_uid == ds.SOPInstanceUID
    # The same values (pydicom swaps the big endian words of the source when it reads them).
    assert dcmread(payload.path).pixel_array.tolist() == dcmread(path).pixel_array.tolist()
    assert path.read_bytes() == original
    request.cleanup()
    assert list(spool.iterdir()) == []


async def test_prepare_fails_with_the_reason_and_leaves_nothing(
    tmp_path: Path, pool: TranscodePool
) -> None:
    path = tmp_path / "ct.dcm"
    write_ct(path, rows=8, columns=8)
    spool = tmp_path / "spool"
    spool.mkdir()
    request = CStoreRequest.from_file(path)
    with pytest.raises(NegotiationError, match="compressing to it was not asked for"):
        await request.prepare(
            _negotiated((CTImageStorage, "1.2.840.10008.1.2.4.80")), pool=pool, temp_dir=spool
        )
    assert list(spool.iterdir()) == []


async def test_a_data_set_not_encoded_as_its_syntax_says_is_rewritten_pixels_untouched(
    tmp_path: Path, pool: TranscodePool
) -> None:
    """pydicom's SC_rgb_jpeg.dcm: implicit VR elements under JPEG Baseline (explicit VR).
    Sent as it is, DCMTK's storescp cannot parse it and aborts the association."""
    source = Path(str(get_testdata_file("SC_rgb_jpeg.dcm")))
    info = read_file_info(source)
    assert dataset_mislabelled(source, info.offset, info.transfer_syntax)
    request = CStoreRequest.from_info(info)
    negotiated = _negotiated((info.sop_class_uid, JPEGBaseline8Bit))
    await request.prepare(negotiated, pool=pool, temp_dir=tmp_path)
    _, _, payload = request.outgoing(negotiated)
    assert isinstance(payload, FileInfo) and payload.path.parent == tmp_path
    assert not dataset_mislabelled(payload.path, payload.offset, payload.transfer_syntax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = dcmread(source)
    after = dcmread(payload.path)
    assert after.PixelData == before.PixelData
    assert after.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert not after.is_implicit_VR
    request.cleanup()


def test_the_command_names_the_data_set_s_instance_when_the_meta_disagrees(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pydicom's rtplan.dcm: its meta information names another SOP Instance UID than its data
    set (DCMTK's storescp answers such a command 0xA900)."""
    source = Path(str(get_testdata_file("rtplan.dcm")))
    info = read_file_info(source)
    ds = dcmread(source, stop_before_pixels=True)
    assert info.sop_instance_uid != ds.SOPInstanceUID
    assert instance_uids(info) == (ds.SOPClassUID, ds.SOPInstanceUID)
    assert "the C-STORE names the data set's" in caplog.text
    request = CStoreRequest.from_file(source)
    assert request.sop_instance_uid == ds.SOPInstanceUID
    # Big endian: read through pydicom.
    big = Path(str(get_testdata_file("rtdose_expb.dcm")))
    expected = dcmread(big, stop_before_pixels=True)
    assert instance_uids(read_file_info(big)) == (
        expected.SOPClassUID,
        expected.SOPInstanceUID,
    )


# -- names ------------------------------------------------------------------------------------------


def test_client_names_are_still_importable() -> None:
    """cli/, services/ and user code import these from dicomnet.client and dicomnet."""
    for name in dicomnet.client.__all__:
        assert hasattr(dicomnet.client, name), name
    for name in ("CEchoRequest", "CFindRequest", "CGetRequest", "CMoveRequest", "CStoreRequest"):
        assert getattr(dicomnet, name) is getattr(dicomnet.client, name)
    assert dicomnet.Request is dicomnet.client.Request
