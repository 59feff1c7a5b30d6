"""Graph answers are parsed by orjson only where it reads them exactly as the standard library
(through requests) does: what a page means never depends on the parser."""

import pytest
import requests

from entra_pipeline.sources.graph.client import _parse


def answer(body: bytes, content_type: str = "application/json; charset=utf-8") -> requests.Response:
    response = requests.Response()
    response._content = body
    response.status_code = 200
    response.headers["Content-Type"] = content_type
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    return response


@pytest.mark.parametrize("body", [
    b'{"value": [{"id": "a", "n": 1, "f": 0.1, "t": true, "x": null, "s": "caf\\u00e9 \xe2\x82\xac"}]}',
    b'{"a": 1, "a": 2}',
    b'{"big": 123456789012345678901234567890}',  # beyond 64 bits: orjson would make it a float
    b'{"edge": 9223372036854775807, "neg": -9223372036854775808}',
    b'{"inf": 1e400}',
    b'{"nan": NaN}',
    b'{"lone": "\\ud800"}',
    b'{"nul": "a\\u0000b"}',
    b"[" * 5 + b"1" + b"]" * 5,
])
def test_every_answer_means_what_the_standard_library_makes_of_it(body):
    parsed, expected = _parse(answer(body)), answer(body).json()
    assert repr(parsed) == repr(expected)  # repr: NaN != NaN, and 1 == 1.0 would hide a float


def test_another_charset_is_decoded_as_declared():
    body = '{"name": "Müller"}'.encode("latin-1")
    assert _parse(answer(body, "application/json; charset=iso-8859-1")) == {"name": "Müller"}


def test_what_neither_parser_reads_raises_as_before():
    with pytest.raises(ValueError):
        _parse(answer(b'{"cut": '))
    with pytest.raises(RecursionError):
        _parse(answer(b"[" * 100_000 + b"]" * 100_000))
