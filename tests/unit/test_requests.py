"""dicomnet.requests: the contexts each SCU request proposes, the command and data set it becomes
on the contexts the peer accepted (PS3.7 §9.1), the default C-GET storage contexts, and the
names dicomnet.client and dicomnet keep re-exporting. No network."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
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
from dicomnet.dataset import decode_dataset
from dicomnet.dimse import commands as c
from dicomnet.errors import NegotiationError
from dicomnet.negotiation import Negotiated, NegotiatedContext
from dicomnet.requests import (
    CEchoRequest,
    CFindRequest,
    CGetRequest,
    CMoveRequest,
    CStoreRequest,
    get_storage_contexts,
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


@pytest.mark.parametrize(
    ("ts", "from_dataset", "expected"),
    [
        # Uncompressed: either source may be re-encoded into the little endian syntaxes.
        (ExplicitVRLittleEndian, False, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (ImplicitVRLittleEndian, False, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
        (
            ExplicitVRBigEndian,
            False,
            [ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        ),
        # Deflated: a Dataset is re-encoded from memory, a file is sent as it is.
        (
            DeflatedExplicitVRLittleEndian,
            True,
            [DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        ),
        (DeflatedExplicitVRLittleEndian, False, [DeflatedExplicitVRLittleEndian]),
        # Encapsulated pixel data is never transcoded.
        (JPEGBaseline8Bit, True, [JPEGBaseline8Bit]),
        (JPEGBaseline8Bit, False, [JPEGBaseline8Bit]),
    ],
)
def test_store_proposes_its_syntax_then_those_it_can_be_reencoded_into(
    ts: str, from_dataset: bool, expected: list[str]
) -> None:
    request = CStoreRequest(
        sop_class_uid=CTImageStorage,
        transfer_syntax=ts,
        dataset=Dataset() if from_dataset else None,
    )
    [ctx] = request.contexts()
    assert ctx.abstract_syntax == CTImageStorage
    assert list(ctx.transfer_syntaxes) == expected


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


def test_store_refuses_to_transcode_or_send_without_a_context() -> None:
    compressed = CStoreRequest(
        sop_class_uid=CTImageStorage, transfer_syntax=JPEGBaseline8Bit, dataset=Dataset()
    )
    with pytest.raises(NegotiationError, match="does not transcode"):
        compressed.outgoing(_negotiated((CTImageStorage, ExplicitVRLittleEndian)))
    with pytest.raises(NegotiationError, match="no presentation context"):
        compressed.outgoing(_negotiated((VERIFICATION, ExplicitVRLittleEndian)))


# -- names ------------------------------------------------------------------------------------------


def test_client_names_are_still_importable() -> None:
    """cli/, services/ and user code import these from dicomnet.client and dicomnet."""
    for name in dicomnet.client.__all__:
        assert hasattr(dicomnet.client, name), name
    for name in ("CEchoRequest", "CFindRequest", "CGetRequest", "CMoveRequest", "CStoreRequest"):
        assert getattr(dicomnet, name) is getattr(dicomnet.client, name)
    assert dicomnet.Request is dicomnet.client.Request
