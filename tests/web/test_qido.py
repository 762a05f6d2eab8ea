"""QIDO-RS over the archive: the six resources, keys, includefield, paging, computed attributes,
RetrieveURL, media types, and the hostile inputs of DICOMWEB.md section 8."""

from __future__ import annotations

from typing import Any

import pytest

from dicomnet.web import WebConfig
from tests.web.conftest import raw_url, tag_value

ROOT = "/dicom-web"


async def get_json(client: Any, url: str, status: int = 200, **kwargs: Any) -> Any:
    response = await client.get(url, **kwargs)
    body = await response.read()
    assert response.status == status, body[:500]
    if status == 200:
        assert response.headers["Content-Type"] == "application/dicom+json"
        return await response.json(content_type=None)
    return response


async def test_studies_default_attributes(archive: Any, client_for: Any) -> None:
    s1 = archive.studies[0][0]
    async with client_for() as client:
        results = await get_json(client, f"{ROOT}/studies")
        assert len(results) == 3
        by_uid = {tag_value(r, "0020000D"): r for r in results}
        study = by_uid[s1]
        assert tag_value(study, "00100010") == {"Alphabetic": "Doe^John"}
        assert tag_value(study, "00100020") == "P1"
        assert study["00201208"]["Value"] == [4]  # NumberOfStudyRelatedInstances
        assert study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
        assert study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
        assert study["00080056"]["Value"] == ["ONLINE"]
        url = tag_value(study, "00081190")
        assert url == f"http://127.0.0.1:{client.port}{ROOT}/studies/{s1}"
        assert study["00081190"]["vr"] == "UR"
        # JSON keys in tag order, empty values without "Value"
        assert list(study) == sorted(study)
        assert all("vr" in element for element in study.values())
        # non-ASCII text comes back as UTF-8 with its character set
        s3 = archive.studies[2][0]
        assert tag_value(by_uid[s3], "00081030") == "Tête"
        assert tag_value(by_uid[s3], "00080005") == "ISO_IR 192"


async def test_matching_keys(archive: Any, client_for: Any) -> None:
    s1 = archive.studies[0][0]
    s2 = archive.studies[1][0]
    async with client_for() as client:

        async def uids(query: str) -> set[str]:
            results = await get_json(client, f"{ROOT}/studies?{query}")
            return {tag_value(r, "0020000D") for r in results}

        assert await uids("PatientName=doe*") == {s1}
        assert await uids("PatientName=*jane*") == {s2, archive.studies[2][0]}
        assert await uids("00100020=P1") == {s1}
        assert await uids(f"StudyInstanceUID={s1},{s2}") == {s1, s2}
        assert await uids(f"StudyInstanceUID={s1}%5C{s2}") == {s1, s2}
        assert await uids("StudyDate=20230101-20231231") == {s2}
        assert await uids("StudyDate=20231231-20230101") == set()  # reversed range
        assert await uids("ModalitiesInStudy=MR") == {s2}
        assert await uids("AccessionNumber=A2") == {s2}
        assert await uids("PatientName=Doe%5EJohn") == {s1}
        assert await uids("PatientName=Doe^John") == {s1}
        # fuzzy matching: word prefix of any name component
        assert await uids("PatientName=jo&fuzzymatching=true") == {s1}
        assert await uids("PatientName=jo&fuzzymatching=false") == set()
        # SQL and GLOB characters are values, never syntax
        for value in ("%25", "_", "%5B", "' OR 1=1--", "Doe%25", "*%5B*", "%3F"):
            assert await uids(f"PatientID={value}") == set(), value


async def test_hierarchical_and_relational(archive: Any, client_for: Any) -> None:
    s1, (se1, se2) = archive.studies[0]
    async with client_for() as client:
        series = await get_json(client, f"{ROOT}/studies/{s1}/series")
        assert {tag_value(r, "0020000E") for r in series} == {se1, se2}
        one = next(r for r in series if tag_value(r, "0020000E") == se1)
        assert one["00201209"]["Value"] == [2]  # NumberOfSeriesRelatedInstances
        assert tag_value(one, "00080060") == "CT"
        assert tag_value(one, "00081190").endswith(f"/studies/{s1}/series/{se1}")
        assert tag_value(one, "0020000D") == s1
        # study attributes are not in a study's series list, but are in /series
        assert "00100010" not in one
        every = await get_json(client, f"{ROOT}/series")
        assert len(every) == 4
        assert all("00100010" in r for r in every)
        instances = await get_json(client, f"{ROOT}/studies/{s1}/series/{se1}/instances")
        assert len(instances) == 2
        first = instances[0]
        assert tag_value(first, "00280010") == 64  # Rows, from the cached metadata
        assert tag_value(first, "00280011") == 64
        assert tag_value(first, "00280100") == 16
        assert tag_value(first, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
        sop = tag_value(first, "00080018")
        assert tag_value(first, "00081190").endswith(f"/series/{se1}/instances/{sop}")
        assert len(await get_json(client, f"{ROOT}/studies/{s1}/instances")) == 4
        everything = await get_json(client, f"{ROOT}/instances")
        assert len(everything) == 6
        mr = await get_json(client, f"{ROOT}/instances?Modality=MR")
        assert len(mr) == 1 and tag_value(mr[0], "00280008") == 3  # NumberOfFrames
        assert await get_json(client, f"{ROOT}/studies/1.2.3/series") == []


async def test_includefield(archive: Any, client_for: Any) -> None:
    s1, (se1, se2) = archive.studies[0]
    async with client_for() as client:
        # OHIF's series query: SeriesDate (kept in the metadata, not the index) via includefield
        series = await get_json(
            client, f"{ROOT}/studies/{s1}/series?includefield=00080021,00080031,0008103E,00200011"
        )
        dates = {tag_value(r, "0020000E"): tag_value(r, "00080021") for r in series}
        assert dates == {se1: "20240102", se2: None}
        studies = await get_json(
            client, f"{ROOT}/studies?includefield=BodyPartExamined&includefield=00081030"
        )
        assert any(tag_value(r, "00081030") == "Chest" for r in studies)
        all_fields = await get_json(client, f"{ROOT}/studies?includefield=all&limit=1")
        assert "00100040" in all_fields[0]  # PatientSex, not a default study attribute
        instances = await get_json(
            client, f"{ROOT}/studies/{s1}/series/{se1}/instances?includefield=00280004,all"
        )
        assert tag_value(instances[0], "00280004") == "MONOCHROME2"
        pixel = await get_json(
            client, f"{ROOT}/studies/{s1}/series/{se1}/instances?includefield=7FE00010"
        )
        assert pixel[0]["7FE00010"]["BulkDataURI"].startswith(f"http://127.0.0.1:{client.port}/")


async def test_paging(archive: Any, client_for: Any) -> None:
    async with client_for() as client:
        all_uids = [tag_value(r, "0020000D") for r in await get_json(client, f"{ROOT}/studies")]
        response = await client.get(f"{ROOT}/studies?limit=2")
        page1 = await response.json(content_type=None)
        assert "additional results" in response.headers["Warning"]
        page2 = await get_json(client, f"{ROOT}/studies?limit=2&offset=2")
        assert [tag_value(r, "0020000D") for r in page1 + page2] == all_uids
        assert await get_json(client, f"{ROOT}/studies?offset=1000") == []
        response = await client.get(f"{ROOT}/studies?limit=2&offset=1")
        assert "Warning" not in response.headers
        # a limit above the maximum is capped, with a warning
        response = await client.get(f"{ROOT}/studies?limit=1000000000")
        assert response.status == 200 and "maximum" in response.headers["Warning"]
        # OHIF's study list query
        ohif = await get_json(
            client,
            f"{ROOT}/studies?limit=101&offset=0&fuzzymatching=false"
            "&includefield=00081030,00080060,00080090,00100030",
        )
        assert len(ohif) == 3


@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=abc",
        "limit=0",
        "limit=1&limit=9",
        "offset=-5",
        "offset=1e3",
        "limit=" + "9" * 40,
        "PatientNam=x",
        "00081111.00081150=1.2",
        "ReferencedStudySequence=1",
        "00291010=x",
        "ZZZZZZZZ=1",
        "fuzzymatching=maybe",
        "PatientName=%ZZ",
        "PatientName=%C3%28",
        "StudyDate=yesterday",
        "PatientID=a&PatientID=b",
        "includefield=NoSuchKeyword",
    ],
)
async def test_bad_parameters_are_400(archive: Any, client_for: Any, query: str) -> None:
    async with client_for() as client:
        response = await client.session.get(raw_url(client, f"{ROOT}/studies?{query}"))
        assert response.status == 400, query
        assert (await response.text()).strip()


async def test_ignored_keys_and_many_parameters(archive: Any, client_for: Any) -> None:
    async with client_for() as client:
        response = await client.get(f"{ROOT}/studies?StationName=X")
        assert response.status == 200
        assert "StationName" in response.headers["Warning"]
        assert len(await response.json(content_type=None)) == 3
        many = "&".join("includefield=00100010" for _ in range(600))
        response = await client.get(f"{ROOT}/studies?{many}")
        assert response.status == 400


@pytest.mark.parametrize(
    "segment",
    [
        "..%2F..%2Fetc",
        "%2e%2e",
        "1.2.%00",
        "1.2.abc",
        "1." + "2" * 70,
        "01.2",
        "1.2.",
        "%D9%A1%D9%A2%D9%A3",  # Arabic-Indic digits: str.isdigit() would say yes
        "*",
        "1.2%5C3",
    ],
)
async def test_path_uids_are_checked(archive: Any, client_for: Any, segment: str) -> None:
    async with client_for() as client:
        response = await client.session.get(raw_url(client, f"{ROOT}/studies/{segment}/series"))
        assert response.status in (400, 404), segment
        url = raw_url(client, f"{ROOT}/studies/{segment}/series/1.2/instances")
        response = await client.session.get(url)
        assert response.status in (400, 404), segment


async def test_paths_that_are_no_resource(archive: Any, client_for: Any) -> None:
    async with client_for() as client:
        for path in ("/studies/", "/studies//series", "/nothing", "/studies/1.2/series/"):
            response = await client.session.get(raw_url(client, ROOT + path))
            assert response.status == 404, path


@pytest.mark.parametrize(
    "accept,status",
    [
        ("application/dicom+json", 200),
        ("application/json", 200),
        ("*/*", 200),
        ("application/*", 200),
        ("application/dicom+json, application/json", 200),
        ("application/dicom+xml", 406),
        ("text/html", 406),
        ("multipart/related; type=application/dicom+xml", 406),
        ("application/dicom+json; q=0", 406),
        ("garbage", 406),
        (", ".join(["image/png"] * 250) + ", application/dicom+json", 406),
        ('multipart/related; type="a\\"b"', 406),
    ],
)
async def test_accept(archive: Any, client_for: Any, accept: str, status: int) -> None:
    async with client_for() as client:
        response = await client.get(f"{ROOT}/studies", headers={"Accept": accept})
        assert response.status == status, accept


async def test_base_url_is_not_taken_from_hostile_headers(archive: Any, client_for: Any) -> None:
    async with client_for() as client:
        own = f"http://127.0.0.1:{client.port}{ROOT}/studies/"
        for headers in (
            {"Host": 'evil.example"><script>'},
            {"Host": "evil.example/path"},
            {"Host": "user@evil.example"},
            {"X-Forwarded-Host": "evil.example"},
            {"Forwarded": "host=evil.example;proto=https"},
            {"Host": "127.0.0.1"},  # dicomweb-client drops the port: the client came directly
        ):
            results = await get_json(client, f"{ROOT}/studies", headers=headers)
            for item in results:
                assert tag_value(item, "00081190").startswith(own), headers
        results = await get_json(client, f"{ROOT}/studies", headers={"Host": "pacs.local:8042"})
        assert tag_value(results[0], "00081190").startswith("http://pacs.local:8042/dicom-web/")
    config = WebConfig(public_url="https://pacs.example/base/")
    async with client_for(config) as client:
        results = await get_json(client, f"{ROOT}/studies", headers={"Host": "other"})
        assert tag_value(results[0], "00081190").startswith("https://pacs.example/base/dicom-web/")
    config = WebConfig(allowed_hosts=("pacs.local",))
    async with client_for(config) as client:
        results = await get_json(client, f"{ROOT}/studies", headers={"Host": "other.local"})
        assert tag_value(results[0], "00081190").startswith("http://127.0.0.1:")
        results = await get_json(client, f"{ROOT}/studies", headers={"Host": "pacs.local:80"})
        assert tag_value(results[0], "00081190").startswith("http://pacs.local:80/")


@pytest.mark.filterwarnings("ignore:Failed to encode value")
async def test_json_edge_values(tmp_path: Any) -> None:
    """Quotes, backslashes, </script>, control characters and undecodable bytes in text:
    valid JSON out, never a 500."""
    from pydicom.uid import generate_uid

    from tests.helpers import make_ct
    from tests.web.conftest import Archive, web_client

    arc = Archive(tmp_path / "edge")
    arc.root.mkdir()
    ds = make_ct(study_uid=generate_uid(), patient_name='A"b\\c</script>\x01^x')
    ds.StudyDescription = "bad \udcff text"
    ds.StudyID = "x"
    arc.add(ds)
    index = arc.index()
    try:
        async with web_client(arc.root, index) as client:
            results = await get_json(client, f"{ROOT}/studies")
            assert len(results) == 1
    finally:
        index.close()
