"""The multipart/related parser and writer, and Accept parsing: pure functions, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomnet.web.media import accepts, parse_accept, wants
from dicomnet.web.multipart import (
    MultipartError,
    MultipartLimitError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from,
    closing,
    part_header,
)

BOUNDARY = "b0und4ry"


def body_of(parts: list[bytes], boundary: str = BOUNDARY, preamble: bytes = b"",
            epilogue: bytes = b"") -> bytes:  # fmt: skip
    """An RFC 2046 body written by hand (not with the writer under test)."""
    out = preamble
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--".encode() + epilogue


def parse(
    body: bytes, chunks: list[int] | None = None, **limits: int
) -> list[tuple[dict[str, str], bytes]]:
    parser = MultipartParser(BOUNDARY, **limits)
    events = []
    if chunks is None:
        events += parser.feed(body)
    else:
        pos = 0
        for size in chunks:
            events += parser.feed(body[pos : pos + size])
            pos += size
        events += parser.feed(body[pos:])
    parser.close()
    parts: list[tuple[dict[str, str], bytes]] = []
    for event in events:
        if isinstance(event, PartStart):
            parts.append((event.headers, b""))
        elif isinstance(event, PartData):
            headers, data = parts[-1]
            parts[-1] = (headers, data + event.data)
        else:
            assert isinstance(event, PartEnd)
    return parts


def test_parts_and_headers() -> None:
    parts = parse(body_of([b"one", b"", b"three\r\n--b0und4r"]))
    assert [d for _, d in parts] == [b"one", b"", b"three\r\n--b0und4r"]
    assert parts[0][0] == {"content-type": "application/dicom"}


def test_what_real_clients_send() -> None:
    # dicomweb-client (Python): a CRLF before the first delimiter, no CRLF at the end
    assert len(parse(body_of([b"x"], preamble=b"\r\n"))) == 1
    # dicomweb-client (JS): NUL bytes after the close delimiter
    assert len(parse(body_of([b"x", b"y"], epilogue=b"\r\n" + b"\x00" * 40))) == 2
    # transport padding after a delimiter
    body = f"--{BOUNDARY}  \r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode()
    assert parse(body) == [({}, b"abc")]


@pytest.mark.parametrize(
    "body",
    [
        body_of([b"x"])[:-2],  # no close delimiter: truncated
        body_of([b"x"]).replace(f"--{BOUNDARY}--".encode(), b""),
        f"--{BOUNDARY}\nContent-Type: a/b\n\nx\n--{BOUNDARY}--".encode(),  # bare LF
        b"no boundary at all",
        b"",
        f"--{BOUNDARY}\r\nbad header line\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        f"--{BOUNDARY}X\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
    ],
)
def test_malformed(body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse(body)


def test_limits() -> None:
    with pytest.raises(MultipartLimitError):
        parse(body_of([b""] * 11), max_parts=10)
    big = f"--{BOUNDARY}\r\nX-Pad: {'a' * 5000}\r\n\r\nx\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MultipartLimitError):
        parse(big, max_header_bytes=4096)
    with pytest.raises(MultipartLimitError):  # headers that never end are cut early too
        MultipartParser(BOUNDARY, max_header_bytes=100).feed(
            f"--{BOUNDARY}\r\n".encode() + b"a" * 1000
        )


def test_boundary_parameter() -> None:
    assert boundary_from({"boundary": "abc"}) == "abc"
    for bad in ({}, {"boundary": ""}, {"boundary": "a" * 71}, {"boundary": "a\x00b"},
                {"boundary": "ab "}):  # fmt: skip
        with pytest.raises(MultipartError):
            boundary_from(bad)


def test_writer_round_trip() -> None:
    body = part_header(BOUNDARY, "application/dicom", first=True) + b"one"
    body += part_header(BOUNDARY, "application/dicom; transfer-syntax=1.2") + b"two"
    body += closing(BOUNDARY)
    assert body.startswith(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
    assert body.endswith(f"\r\n--{BOUNDARY}--\r\n".encode())
    assert [d for _, d in parse(body)] == [b"one", b"two"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_any_split_gives_the_same_parts(parts: list[bytes], chunks: list[int]) -> None:
    parts = [p.replace(f"--{BOUNDARY}".encode(), b"--x") for p in parts]
    body = body_of(parts, preamble=b"\r\n", epilogue=b"\r\n")
    assert [d for _, d in parse(body, chunks)] == parts


def test_accept_parsing() -> None:
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=*, */*;q=0.1'
    )
    assert ranges[0].params == {"type": "application/dicom", "transfer-syntax": "*"}
    assert ranges[1].type == "*/*"
    orthanc = parse_accept('multipart/related; type="application/octet-stream; transfer-syntax=*"')
    assert orthanc[0].params == {"type": "application/octet-stream", "transfer-syntax": "*"}
    ohif = parse_accept("multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert ohif[0].params["type"] == "application/octet-stream"
    assert [w.part_type for w in wants(ohif, ("application/octet-stream",))] == [
        "application/octet-stream"
    ]
    assert parse_accept(None)[0].type == "*/*"
    assert parse_accept("a/b;q=0, c/d;q=2, x") == []
    assert accepts(parse_accept("text/html, application/*;q=0.5"), "application/dicom+json")
    assert accepts(parse_accept('multipart/related; type="a\\"b"'), "application/json") is None
    assert len(parse_accept(",".join(["a/b"] * 1000))) == 200
