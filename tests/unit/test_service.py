"""The handler API's names and signatures: the handler-side request types (``Received...``),
the 0.1 names kept for one release with a DeprecationWarning, and the provider Protocols that
make mypy check a service's handlers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import dicomnet
from dicomnet import service
from dicomnet.service import (
    AssociationInfo,
    CStoreProvider,
    ReceivedCStore,
    Service,
)

INFO = AssociationInfo(1, "127.0.0.1", 104)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("CEchoRequest", "ReceivedCEcho"),
        ("CStoreRequest", "ReceivedCStore"),
        ("CFindRequest", "ReceivedCFind"),
        ("CMoveRequest", "ReceivedCMove"),
        ("CGetRequest", "ReceivedCGet"),
        ("NRequest", "ReceivedN"),
    ],
)
def test_the_old_names_still_import_with_a_deprecation_warning(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old} is renamed {new}"):
        cls = getattr(service, old)
    assert cls is getattr(service, new)
    with pytest.warns(DeprecationWarning):
        exec(f"from dicomnet.service import {old}", {})


def test_one_name_one_meaning() -> None:
    """``dicomnet.CStoreRequest`` is what a client sends; a handler receives a
    ``ReceivedCStore``; the package exports both, distinct."""
    assert dicomnet.CStoreRequest is not dicomnet.ReceivedCStore
    assert dicomnet.ReceivedCStore is ReceivedCStore
    assert not {"CStoreRequest", "CFindRequest"} & set(service.__all__)
    with pytest.raises(AttributeError):
        service.NoSuchName  # noqa: B018


def test_a_service_naming_a_provider_must_implement_it() -> None:
    class Forgot(Service, CStoreProvider):
        pass

    with pytest.raises(TypeError, match="on_c_store"):
        Forgot(INFO)  # type: ignore[abstract]

    class Store(Service, CStoreProvider):
        async def on_c_store(self, request: ReceivedCStore) -> int:
            return 0

    assert hasattr(Store(INFO), "on_c_store")
    # A service that names no provider offers what it defines, as before.
    assert not hasattr(Service(INFO), "on_c_find")


@pytest.mark.slow
def test_mypy_checks_a_service_against_its_provider_protocols(tmp_path: Path) -> None:
    """A handler with the wrong request type, a missing handler and a C-FIND handler that is
    not an async iterator are all reported; the right ones are not."""
    api = pytest.importorskip("mypy.api")
    good = tmp_path / "good.py"
    good.write_text(
        textwrap.dedent(
            """
            from collections.abc import AsyncIterator

            from pydicom import Dataset

            from dicomnet import ReceivedCFind, ReceivedCStore, Response, Service
            from dicomnet.service import CFindProvider, CStoreProvider


            class Good(Service, CStoreProvider, CFindProvider):
                async def on_c_store(self, request: ReceivedCStore) -> int:
                    return 0

                async def on_c_find(self, request: ReceivedCFind) -> AsyncIterator[Dataset]:
                    yield Dataset()
            """
        )
    )
    bad = tmp_path / "bad.py"
    bad.write_text(
        textwrap.dedent(
            """
            from dicomnet import AssociationInfo, ReceivedCFind, Service
            from dicomnet.service import CFindProvider, CStoreProvider


            class WrongType(Service, CStoreProvider):
                async def on_c_store(self, request: ReceivedCFind) -> int:
                    return 0


            class NotAnIterator(Service, CFindProvider):
                async def on_c_find(self, request: ReceivedCFind) -> int:
                    return 0


            class Missing(Service, CStoreProvider):
                pass


            Missing(AssociationInfo(1, "", 0))
            """
        )
    )
    root = Path(__file__).resolve().parents[2]
    out, err, _status = api.run(
        ["--config-file", str(root / "pyproject.toml"), str(good), str(bad)]
    )
    assert "good.py" not in out, out
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 3, out
    wrong_type, not_iterator, missing = errors
    assert '"on_c_store"' in wrong_type and "CStoreProvider" in wrong_type
    assert '"on_c_find"' in not_iterator and "CFindProvider" in not_iterator
    assert 'Cannot instantiate abstract class "Missing"' in missing
    assert err == ""


def test_the_package_reexports_the_handler_names() -> None:
    for name in (
        "ReceivedCEcho",
        "ReceivedCStore",
        "ReceivedCFind",
        "ReceivedCMove",
        "ReceivedCGet",
    ):
        assert getattr(dicomnet, name) is getattr(service, name)
        assert name in dicomnet.__all__
