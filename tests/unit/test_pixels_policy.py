"""Which contexts to propose for a file and which accepted one to send it on (issue 10, bug 1:
the choice looked only at the first accepted context of the SOP class)."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomnet.errors import NegotiationError
from dicomnet.negotiation import ProposedContext
from dicomnet.pixels import (
    Action,
    Target,
    TranscodePolicy,
    can_decode,
    can_encode,
    choose_context,
    proposed_contexts,
    storage_contexts,
    storage_plan,
)

SC = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"
codecs = pytest.mark.skipif(
    not (can_decode(JPEG2000Lossless) and can_encode("jpeg-ls-lossless")),
    reason="the codecs extra is not installed",
)


def test_exact_syntax_wins_even_when_not_the_first_accepted() -> None:
    # storescp --accept-all accepted the SOP class in several contexts: JPEG 2000 first.
    accepted = {1: JPEG2000Lossless, 3: ExplicitVRLittleEndian, 5: ImplicitVRLittleEndian}
    choice = choose_context(ImplicitVRLittleEndian, accepted)
    assert (choice.context_id, choice.action) == (5, Action.SEND)
    assert not choice.needs_transcoding


def test_native_file_is_re_encoded_to_an_accepted_native_syntax() -> None:
    # SC_rgb_small_odd_big_endian.dcm against a peer that took Explicit LE in context 3 only.
    accepted = {1: JPEG2000Lossless, 3: ExplicitVRLittleEndian}
    choice = choose_context(ExplicitVRBigEndian, accepted)
    assert (choice.context_id, choice.transfer_syntax, choice.action) == (
        3,
        ExplicitVRLittleEndian,
        Action.REENCODE,
    )


def test_native_preference_order_explicit_then_implicit_then_deflated_then_big_endian() -> None:
    accepted = {
        1: ExplicitVRBigEndian,
        3: DeflatedExplicitVRLittleEndian,
        5: ImplicitVRLittleEndian,
    }
    assert choose_context(ExplicitVRLittleEndian, accepted).context_id == 5
    accepted = {1: ExplicitVRBigEndian, 3: DeflatedExplicitVRLittleEndian}
    assert choose_context(ExplicitVRLittleEndian, accepted).context_id == 3


@codecs
def test_compressed_file_is_decompressed_when_only_native_was_accepted() -> None:
    choice = choose_context(
        JPEG2000Lossless, {7: ImplicitVRLittleEndian, 9: ExplicitVRLittleEndian}
    )
    assert (choice.context_id, choice.action) == (9, Action.DECOMPRESS)
    assert choice.needs_transcoding and not choice.lossy


@codecs
def test_lossy_file_is_decompressed_too_it_loses_nothing_more() -> None:
    choice = choose_context(JPEGBaseline8Bit, {1: ExplicitVRLittleEndian}, source_lossy=True)
    assert choice.action is Action.DECOMPRESS


def test_no_compression_unless_asked() -> None:
    with pytest.raises(NegotiationError) as info:
        choose_context(ExplicitVRLittleEndian, {1: JPEGLSLossless, 3: RLELossless})
    message = str(info.value)
    assert "JPEG-LS Lossless" in message and "context 1" in message
    assert "not asked for" in message


@codecs
def test_compression_when_asked_is_preferred_over_sending_as_is() -> None:
    policy = TranscodePolicy(targets=(Target(JPEGLSLossless),))
    accepted = {1: ExplicitVRLittleEndian, 3: JPEGLSLossless}
    choice = choose_context(ExplicitVRLittleEndian, accepted, policy)
    assert (choice.context_id, choice.action) == (3, Action.COMPRESS)
    # A peer that did not take the target: the file goes as it is.
    assert choose_context(ExplicitVRLittleEndian, {1: ExplicitVRLittleEndian}, policy).action is (
        Action.SEND
    )


@codecs
def test_lossy_targets_need_allow_lossy_and_twice_for_lossy_input() -> None:
    near = Target(JPEGLSNearLossless, near_lossless=2)
    accepted = {1: JPEGLSNearLossless}
    with pytest.raises(NegotiationError, match="lossy compression was not asked for"):
        choose_context(ExplicitVRLittleEndian, accepted, TranscodePolicy(targets=(near,)))
    allowed = TranscodePolicy(targets=(near,), allow_lossy=True)
    choice = choose_context(ExplicitVRLittleEndian, accepted, allowed)
    assert choice.lossy and choice.action is Action.COMPRESS
    with pytest.raises(NegotiationError, match="lossy already"):
        choose_context(ExplicitVRLittleEndian, accepted, allowed, source_lossy=True)
    twice = TranscodePolicy(targets=(near,), allow_lossy=True, allow_lossy_to_lossy=True)
    assert choose_context(ExplicitVRLittleEndian, accepted, twice, source_lossy=True).lossy


@codecs
def test_compressed_to_another_compressed_syntax_when_asked() -> None:
    policy = TranscodePolicy(targets=(Target(JPEGLSLossless),))
    choice = choose_context(RLELossless, {3: JPEGLSLossless}, policy)
    assert choice.action is Action.TRANSCODE


def test_decompression_can_be_forbidden() -> None:
    with pytest.raises(NegotiationError, match="decompression was not allowed"):
        choose_context(RLELossless, {1: ExplicitVRLittleEndian}, TranscodePolicy(decompress=False))


def test_a_data_set_without_pixels_goes_in_any_syntax() -> None:
    choice = choose_context(ExplicitVRLittleEndian, {1: JPEGLSLossless}, has_pixels=False)
    assert choice.action is Action.REENCODE


def test_nothing_accepted() -> None:
    with pytest.raises(NegotiationError, match="no presentation context"):
        choose_context(ExplicitVRLittleEndian, {})


def test_missing_decoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import dicomnet.pixels.policy as policy

    monkeypatch.setattr(policy, "can_decode", lambda ts: False)
    with pytest.raises(NegotiationError, match="decoding JPEG 2000"):
        choose_context(JPEG2000, {1: ExplicitVRLittleEndian})


# --- proposals ---------------------------------------------------------------------------------


def test_native_file_proposes_its_own_syntax_alone_and_the_fallback() -> None:
    """Issue 10, bug 2: in one context with the fallback, an acceptor that prefers Explicit VR
    Little Endian (DCMTK's storescp) makes a big endian or implicit file be re-encoded although
    it would have taken it as it is."""
    fallback = ProposedContext(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    for syntax in (ExplicitVRBigEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        assert proposed_contexts(CT, syntax) == [ProposedContext(CT, [syntax]), fallback]
    # An Explicit VR Little Endian file's own context is the fallback.
    assert proposed_contexts(CT, ExplicitVRLittleEndian) == [fallback]


def test_without_the_fallback_a_file_is_proposed_as_before() -> None:
    own = TranscodePolicy(propose_fallback=False, decompress=False)
    assert proposed_contexts(CT, ExplicitVRBigEndian, own) == [
        ProposedContext(CT, [ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ]
    assert proposed_contexts(CT, JPEG2000Lossless, own) == [ProposedContext(CT, [JPEG2000Lossless])]


def test_uncompressed_only_proposes_the_fallback() -> None:
    policy = TranscodePolicy(propose_own=False)
    assert proposed_contexts(CT, ImplicitVRLittleEndian, policy) == [
        ProposedContext(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ]


def test_a_policy_must_propose_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TranscodePolicy(propose_own=False, propose_fallback=False)


@codecs
def test_compressed_file_proposes_its_syntax_and_a_native_fallback() -> None:
    assert proposed_contexts(CT, JPEG2000Lossless) == [
        ProposedContext(CT, [JPEG2000Lossless]),
        ProposedContext(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    ]


@codecs
def test_requested_targets_come_first_in_their_own_context() -> None:
    policy = TranscodePolicy(targets=(Target(JPEGLSLossless), Target(RLELossless)))
    contexts = proposed_contexts(CT, ExplicitVRLittleEndian, policy)
    assert contexts[0] == ProposedContext(CT, [JPEGLSLossless, RLELossless])
    assert contexts[1].transfer_syntaxes[0] == ExplicitVRLittleEndian


@codecs
def test_a_target_equal_to_the_file_syntax_is_kept_when_the_own_syntax_is_not_proposed() -> None:
    policy = TranscodePolicy(targets=(Target(JPEGLSLossless),), propose_own=False)
    assert proposed_contexts(CT, JPEGLSLossless, policy)[0] == ProposedContext(CT, [JPEGLSLossless])
    own = TranscodePolicy(targets=(Target(JPEGLSLossless),))
    assert proposed_contexts(CT, JPEGLSLossless, own)[0] == ProposedContext(CT, [JPEGLSLossless])


def test_a_data_set_without_pixels_prefers_its_own_syntax_over_the_targets() -> None:
    policy = TranscodePolicy(targets=(Target(JPEGLSLossless),))
    accepted = {1: JPEGLSLossless, 3: ExplicitVRLittleEndian}
    choice = choose_context(ExplicitVRLittleEndian, accepted, policy, has_pixels=False)
    assert (choice.context_id, choice.action) == (3, Action.SEND)


@codecs
def test_storage_contexts_share_fallbacks_and_keep_a_pair_together() -> None:
    pairs = [(CT, JPEG2000Lossless), (CT, RLELossless), (SC, ExplicitVRLittleEndian)]
    groups = storage_contexts(pairs)
    assert len(groups) == 1
    fallback = ProposedContext(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assert groups[0].count(fallback) == 1
    assert len(groups[0]) == 4
    # Room for 3 contexts per association: the RLE pair reuses the CT fallback of its group;
    # in a new group a pair brings its fallback again.
    small = storage_contexts(pairs, limit=3)
    assert small[0] == [ProposedContext(CT, [JPEG2000Lossless]), fallback, ProposedContext(CT, [RLELossless])]  # fmt: skip
    assert [c.abstract_syntax for c in small[1]] == [SC]
    split = storage_contexts([(CT, JPEG2000Lossless), (SC, ExplicitVRLittleEndian), (CT, RLELossless)], limit=3)  # fmt: skip
    assert split[1] == [ProposedContext(CT, [RLELossless]), fallback]


def test_storage_plan_says_which_pairs_each_association_carries() -> None:
    pairs = [(CT, ImplicitVRLittleEndian), (SC, ExplicitVRLittleEndian), (CT, ExplicitVRBigEndian)]
    plan = storage_plan(pairs, limit=3)
    assert [group_pairs for _, group_pairs in plan] == [pairs[:2], pairs[2:]]
    for contexts, _ in plan:
        assert len(contexts) <= 3
    assert storage_contexts(pairs, limit=3) == [contexts for contexts, _ in plan]
    assert storage_plan([]) == []
