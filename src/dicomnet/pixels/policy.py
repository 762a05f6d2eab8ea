"""Which presentation contexts to propose for a file, and which accepted context to send it on
(PS3.8 §9.3.2.2, PS3.5 §10): pure functions of transfer syntaxes, a policy and what this
installation's codecs can do.

Rules:
- Propose per SOP class the file's own syntax in a context of its own (so that an acceptor that
  prefers another syntax cannot make us re-encode a file it would have taken as it is) and a
  fallback context with the little endian native syntaxes (for a native file always, for an
  encapsulated one when this installation can decode it); an Explicit VR Little Endian file's
  own context is that fallback. The user's requested syntaxes (``TranscodePolicy.targets``) go
  in a context of their own, first. Without the fallback (``propose_fallback=False``) a file is
  proposed as before this module existed: its own syntax, with the little endian native ones
  when it is native.
- Choose among *all* accepted contexts of the SOP class: the syntaxes the user asked for first,
  then the file's own syntax, then a native syntax it can be re-encoded to, then a native syntax
  it can be decompressed to (lossless decoding is always allowed). Compression happens only
  when asked; lossy output only when asked, and lossy input is re-compressed lossy only when
  asked twice (``allow_lossy_to_lossy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnet.errors import NegotiationError
from dicomnet.negotiation import MAX_PRESENTATION_CONTEXTS, ProposedContext, storage_context
from dicomnet.pixels.syntaxes import (
    NATIVE,
    Target,
    can_decode,
    can_encode,
    capability,
    is_native,
    syntax_name,
)
from dicomnet.pixels.transcode import Action, classify


@dataclass(frozen=True, slots=True)
class TranscodePolicy:
    """What a sender may do to a file to get it through.

    ``targets``: the syntaxes the user asked to send in (``--transfer-syntax``), preferred in
    this order; compression happens only towards these. ``decompress``: decode to a native
    syntax when the peer accepted only those (never loses anything). ``allow_lossy``: lossy
    targets may be used; ``allow_lossy_to_lossy``: even for images that were lossy already."""

    targets: tuple[Target, ...] = ()
    decompress: bool = True
    allow_lossy: bool = False
    allow_lossy_to_lossy: bool = False
    #: Propose each file's own syntax (False: only the targets and the fallback).
    propose_own: bool = True
    #: Propose the native fallback context (False: only the targets and the own syntax).
    propose_fallback: bool = True

    def __post_init__(self) -> None:
        if not (self.targets or self.propose_own or self.propose_fallback):
            raise ValueError("a transcoding policy must propose at least one transfer syntax")


DEFAULT_POLICY = TranscodePolicy()


@dataclass(frozen=True, slots=True)
class ContextChoice:
    """The accepted context to send a file on and what must be done to it first."""

    context_id: int
    transfer_syntax: str
    action: Action
    target: Target

    @property
    def needs_transcoding(self) -> bool:
        """True when the file must go through ``transcode_file`` (anything but SEND)."""
        return self.action is not Action.SEND

    @property
    def lossy(self) -> bool:
        return self.target.lossy


def _obstacle(
    file_syntax: str,
    target: Target,
    policy: TranscodePolicy,
    source_lossy: bool,
    has_pixels: bool,
    asked: bool,
) -> str | None:
    """Why the file cannot be sent as ``target`` (None: it can)."""
    action = classify(file_syntax, target.transfer_syntax)
    if action is Action.SEND or not has_pixels:
        return None
    if action is Action.REENCODE:
        return None
    if action in (Action.DECOMPRESS, Action.TRANSCODE) and not can_decode(file_syntax):
        return capability(file_syntax).why_not(encode=False)
    if action is Action.DECOMPRESS:
        return None if policy.decompress else "decompression was not allowed"
    if not asked:
        return "compressing to it was not asked for"
    if not can_encode(target):
        return capability(target.transfer_syntax).why_not(encode=True)
    if target.lossy and not policy.allow_lossy:
        return "it is lossy and lossy compression was not asked for"
    if target.lossy and source_lossy and not policy.allow_lossy_to_lossy:
        return "the image is lossy already and lossy re-compression was not asked for"
    return None


def choose_context(
    file_syntax: str,
    accepted: Mapping[int, str],
    policy: TranscodePolicy = DEFAULT_POLICY,
    *,
    source_lossy: bool = False,
    has_pixels: bool = True,
) -> ContextChoice:
    """Pick the context to send a file in ``file_syntax`` on, among ``accepted`` (context ID ->
    transfer syntax: every accepted context of the file's SOP class). ``source_lossy``: the
    image was lossy compressed before (Lossy Image Compression "01"); ``has_pixels``: the data
    set has Pixel Data (without it any syntax is a mere re-encoding).

    Raises ``NegotiationError`` naming each accepted syntax and why it cannot be used."""
    if not accepted:
        raise NegotiationError("the peer accepted no presentation context for this SOP class")
    by_syntax: dict[str, int] = {}
    for context_id in sorted(accepted):
        by_syntax.setdefault(accepted[context_id], context_id)

    def choice(target: Target) -> ContextChoice:
        ts = target.transfer_syntax
        action = classify(file_syntax, ts)
        if not has_pixels and action is not Action.SEND:
            action = Action.REENCODE
        return ContextChoice(by_syntax[ts], ts, action, target)

    # A data set without pixels is only re-encoded: its own syntax first, the targets (chosen
    # for the pixels) only when nothing else was accepted.
    candidates: list[tuple[Target, bool]] = [(t, True) for t in policy.targets if has_pixels]
    candidates.append((Target(file_syntax), False))
    candidates += [(Target(ts), False) for ts in NATIVE]
    candidates += [(Target(ts), False) for ts in by_syntax if ts not in NATIVE]
    for target, asked in candidates:
        if target.transfer_syntax not in by_syntax:
            continue
        if _obstacle(file_syntax, target, policy, source_lossy, has_pixels, asked) is None:
            return choice(target)
    reasons = []
    for ts, context_id in by_syntax.items():
        asked_target = next((t for t in policy.targets if t.transfer_syntax == ts), None)
        target = asked_target or Target(ts)
        why = _obstacle(
            file_syntax, target, policy, source_lossy, has_pixels, asked_target is not None
        )
        reasons.append(f"{syntax_name(ts)} (context {context_id}): {why or 'not usable'}")
    raise NegotiationError(
        f"no accepted presentation context fits a {syntax_name(file_syntax)} file: "
        + "; ".join(reasons)
    )


#: The native syntaxes of the fallback context, in dicomnet's order of preference.
FALLBACK_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def proposed_contexts(
    sop_class_uid: str,
    file_syntax: str,
    policy: TranscodePolicy = DEFAULT_POLICY,
) -> list[ProposedContext]:
    """The contexts to propose for one (SOP class, transfer syntax) of the files to send."""
    contexts: list[ProposedContext] = []
    wanted = [t.transfer_syntax for t in policy.targets if can_encode(t) or t.native]
    # The file's own syntax is in its own context when that is proposed.
    wanted = [ts for ts in dict.fromkeys(wanted) if ts != file_syntax or not policy.propose_own]
    if wanted:
        contexts.append(ProposedContext(sop_class_uid, wanted))
    native = is_native(file_syntax)
    fallback = policy.propose_fallback and (
        native or (policy.decompress and can_decode(file_syntax))
    )
    if policy.propose_own:
        if not policy.propose_fallback:
            contexts.append(storage_context(sop_class_uid, file_syntax))
        elif file_syntax != FALLBACK_SYNTAXES[0]:
            contexts.append(ProposedContext(sop_class_uid, [file_syntax]))
    if fallback:
        contexts.append(ProposedContext(sop_class_uid, list(FALLBACK_SYNTAXES)))
    return contexts


def storage_plan(
    pairs: Iterable[tuple[str, str]],
    policy: TranscodePolicy = DEFAULT_POLICY,
    limit: int = MAX_PRESENTATION_CONTEXTS,
) -> list[tuple[list[ProposedContext], list[tuple[str, str]]]]:
    """``negotiation.contexts_for`` with fallbacks: group the contexts of (SOP class, transfer
    syntax) pairs into associations of at most ``limit`` contexts, identical contexts once per
    association, all contexts of one pair in the same association (the choice needs them all).
    Each group comes with the pairs whose files it carries."""
    if limit < 3:
        raise ValueError(f"limit must be at least 3 (a pair may need 3 contexts), not {limit}")
    groups: list[tuple[list[ProposedContext], list[tuple[str, str]]]] = [([], [])]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for pair in dict.fromkeys(pairs):
        contexts = proposed_contexts(*pair, policy)
        keys = [(c.abstract_syntax, tuple(c.transfer_syntaxes)) for c in contexts]
        new = [(k, c) for k, c in zip(keys, contexts, strict=True) if k not in seen]
        if len(groups[-1][0]) + len(new) > limit:
            groups.append(([], []))
            seen = set()
            new = list(zip(keys, contexts, strict=True))
        for key, context in new:
            if key not in seen:
                seen.add(key)
                groups[-1][0].append(context)
        groups[-1][1].append(pair)
    return groups if groups[0][1] else []


def storage_contexts(
    pairs: Iterable[tuple[str, str]],
    policy: TranscodePolicy = DEFAULT_POLICY,
    limit: int = MAX_PRESENTATION_CONTEXTS,
) -> list[list[ProposedContext]]:
    """The contexts of ``storage_plan``, one list per association."""
    return [contexts for contexts, _ in storage_plan(pairs, policy, limit)]
