"""Property tests of ingest.handle over arbitrary paths, queries, headers and bodies.

Invariants: no input gives a 5xx (the publisher here never fails, so any 5xx is a bug);
a non-200 publishes nothing; a 200 published exactly one message holding the exact body.
The publisher is a recording fake (unit tests only; the integration tests use the emulator).
"""

from __future__ import annotations

import io
import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug import Request
from werkzeug.test import EnvironBuilder

from omi_receiver.runtime import contract, ingest
from omi_receiver.runtime.config import Config

TOKENS = ("tok-A_current.secret", "tok-B~rotated")
CONFIG = Config(
    google_cloud_project="proj",
    ingest_tokens=",".join(TOKENS),
    max_chunk_bytes=4_000,
    publish_timeout_seconds=0.5,
)


class RecordingPublisher:
    def __init__(self):
        self.published = []

    def publish(self, topic, data, *, attributes, timeout):
        self.published.append((data, attributes))
        return "1"


# WSGI hands the app latin-1 strings: any byte can arrive in a path, query or header.
latin1 = st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=40)
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)

paths = st.one_of(
    st.sampled_from(TOKENS).map(lambda t: f"/fn/{t}"),
    st.sampled_from(TOKENS).map(lambda t: f"/{t}/"),
    st.builds(lambda a, b: f"/{a}/{b}", latin1, latin1),
    latin1.map(lambda s: "/" + s),
    st.just("/"),
)
uids = st.one_of(st.from_regex(contract.UID_PATTERN, fullmatch=True), latin1)
rates = st.one_of(
    st.sampled_from(["8000", "16000", "48000", "7999", "48001", "", "16k"]), st.integers(-10, 10**7).map(str), latin1
)
query_params = st.lists(
    st.one_of(
        st.tuples(st.just("uid"), uids),
        st.tuples(st.just("sample_rate"), rates),
        st.tuples(printable, printable),
    ),
    max_size=5,
)
separators = st.lists(st.sampled_from(["&", "?", ";", "&&"]), min_size=5, max_size=5)
queries = st.one_of(
    st.builds(
        lambda ps, seps: "".join(f"{seps[i]}{k}={v}" for i, (k, v) in enumerate(ps))[1:], query_params, separators
    ),
    latin1,
)
header_values = {
    "Content-Type": st.one_of(
        st.sampled_from(["application/octet-stream", "application/octet-stream; a=b", "text/plain", "", ";"]), latin1
    ),
    "Idempotency-Key": st.one_of(st.uuids().map(str), printable, latin1),
    "Authorization": st.one_of(st.sampled_from(TOKENS).map(lambda t: f"Bearer {t}"), latin1),
    "Content-Length": st.one_of(st.integers(-5, 10_000).map(str), latin1),
    "Transfer-Encoding": st.just("chunked"),
}
headers = st.fixed_dictionaries({}, optional=header_values)
bodies = st.one_of(st.binary(max_size=4_100), st.sampled_from([b"", b"\x00", bytes(4_000), bytes(4_002)]))
methods = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH"])


def build(method, path, query, header_map, body, streamed) -> Request:
    environ = EnvironBuilder(method=method, data=body).get_environ()
    environ.update({"PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": io.BytesIO(body)})
    for name, value in header_map.items():
        key = name.upper().replace("-", "_")
        environ[key if name in ("Content-Type", "Content-Length") else f"HTTP_{key}"] = value
    if streamed:  # as gunicorn passes a chunked body: no length, input terminated
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    return Request(environ)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(methods, paths, queries, headers, bodies, st.booleans())
def test_no_input_gives_5xx_or_a_publish_without_200(method, path, query, header_map, body, streamed):
    publisher = RecordingPublisher()
    request = build(method, path, query, header_map, body, streamed)
    expected_body = request.environ["wsgi.input"].getvalue()
    response = ingest.handle(request, CONFIG, publisher)
    answer = json.loads(response.get_data())

    assert response.status_code < 500, answer
    if response.status_code != 200:
        assert publisher.published == []
        assert set(answer) == {"error", "detail"}
        return
    [(data, attrs)] = publisher.published
    # A declared length can only truncate what the server hands on; compare with that.
    declared = request.content_length
    # The assembler accepts every published message, and reads back the body as posted
    # (FLAC or PCM: CHUNK_ENCODING is flac here, the codec may or may not be loaded yet).
    chunk = contract.Chunk.from_message(data, attrs)
    assert chunk.data == (expected_body if declared is None else expected_body[:declared])
    assert answer["bytes"] == len(chunk.data)
    assert attrs[contract.ATTR_ENCODING] in {"flac", "pcm"}


def plain(value: str) -> bool:
    """No character that splits or re-encodes a query value, so it arrives as written."""
    return not set(value) & set("&#=?+%;")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(TOKENS),
    uids.filter(plain),
    rates.filter(plain),
    st.binary(min_size=2, max_size=4_000),
    printable.filter(plain),
)
def test_well_formed_requests_are_published_exactly(token, uid, rate, body, extra):
    """The legacy concatenated query and the proper one give the same result."""
    body = body[: len(body) // 2 * 2]
    outcomes = []
    for query in (f"x={extra}&sample_rate={rate}&uid={uid}", f"x={extra}?sample_rate={rate}&uid={uid}"):
        publisher = RecordingPublisher()
        environ = EnvironBuilder(
            method="POST", path=f"/fn/{token}", data=body, content_type="application/octet-stream"
        ).get_environ()
        environ["QUERY_STRING"] = query
        response = ingest.handle(Request(environ), CONFIG, publisher)
        outcomes.append(response.status_code)
        if response.status_code == 200:
            [(data, attrs)] = publisher.published
            assert data == body
            assert (attrs["uid"], attrs["sample_rate"]) == (uid, rate)
        else:
            assert publisher.published == []
    valid = contract.UID_PATTERN.fullmatch(uid) and re.fullmatch("[1-9][0-9]{0,5}", rate) and 8000 <= int(rate) <= 48000
    assert outcomes == ([200, 200] if valid else [400, 400])
