"""Hostile HTTP/1.x inputs and the harness that sends them to Gunicorn 27 and to ferricorn.

Shared by tests/reliability/test_hostile_matrix.py (the assertions) and
scripts/hostile_matrix.py (the report in docs/hostile-input.md).

Every case is one raw byte string, sent in one go on a fresh TCP connection. The harness
then reads until the server closes or stays silent for READ_TIMEOUT seconds, splits what
came back into responses and records, per response, the status line and what the app
(tests/apps/testapp.py) saw:

* /echo answers the request body (application/octet-stream): the body bytes;
* /environ answers a JSON environ: REQUEST_METHOD, PATH_INFO and QUERY_STRING;
* / answers "Hello, World!".

Body-carrying cases append FOLLOW, a second request to /environ with `Connection: close`:
if a server ends the first request somewhere else than the other server does, the
follow-up is eaten, rejected or seen with a smuggled prefix, and the two servers' lists of
requests-seen differ. The verdict rules are in `verdict()`.

Gunicorn runs with the gthread worker: the default sync worker answers exactly one request
per connection (it always sends `Connection: close`), so it can never show how it would
frame a second, pipelined request; gthread runs the same parser with keep-alive, as
ferricorn does. Both servers get THREADS application threads so that cases can run in
parallel (see start_gunicorn). scripts/hostile_matrix.py also runs every case one at a
time against the plain `gunicorn -w 1` (sync worker) and `ferricorn -w 1` commands and
lists each case whose first status differs there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
APPS = TESTS / "apps"
REPO = TESTS.parent

READ_TIMEOUT = 1.5  # seconds of silence after which a connection counts as "waiting"
HELLO = b"Hello, World!\n"


# ---------------------------------------------------------------------------------------
# The cases


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    data: bytes
    note: str = ""  # what the reference (gunicorn.md 6.1/6.2) or the RFC says
    display: str = ""  # shown instead of the escaped bytes when they are too repetitive


H = b"Host: x\r\n"
FOLLOW = b"GET /environ?follow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"


def req(line: bytes, headers: bytes = H, body: bytes = b"", follow: bool = False) -> bytes:
    return line + b"\r\n" + headers + b"\r\n" + body + (FOLLOW if follow else b"")


def post(headers: bytes, body: bytes, path: bytes = b"/echo", version: bytes = b"1.1", follow: bool = True) -> bytes:
    """A POST to /echo with the given extra header lines (each ending in CRLF) and body."""
    return req(b"POST " + path + b" HTTP/" + version, H + headers, body, follow)


def chunked(body: bytes, te: bytes = b"Transfer-Encoding: chunked\r\n", extra: bytes = b"", follow: bool = True) -> bytes:
    return post(te + extra, body, follow=follow)


def get_environ(headers: bytes = b"", line: bytes = b"GET /environ HTTP/1.1") -> bytes:
    return req(line, H + headers)


def _cases() -> list:
    c = []

    def add(group, name, data, note="", display=""):
        c.append(Case(name, group, data, note, display))

    g = "baseline"
    add(g, "valid-get", get_environ(), "control case")
    add(g, "valid-post-cl", post(b"Content-Length: 5\r\n", b"hello"), "control case, with the follow-up request")
    add(g, "valid-post-chunked", chunked(CHUNKED_HELLO), "control case, with the follow-up request")

    g = "smuggling"
    add(g, "cl-te", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"), "CL and TE together: gunicorn 400")
    add(g, "te-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"), "TE and CL together: gunicorn 400")
    add(g, "cl-te-zero-cl", post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", CHUNKED_HELLO), "CL: 0 plus TE")
    te_obf = [
        ("te-xchunked", b"Transfer-Encoding: xchunked\r\n", "unknown coding: gunicorn 501"),
        ("te-chunked-space-value", b"Transfer-Encoding:  chunked\r\n", "extra OWS before the value is legal"),
        ("te-chunked-trailing-space", b"Transfer-Encoding: chunked \r\n", "trailing OWS is legal"),
        ("te-leading-space-line", b" Transfer-Encoding: chunked\r\n", "a header line starting with SP is obs-fold (of Host)"),
        ("te-space-before-colon", b"Transfer-Encoding : chunked\r\n", "whitespace before the colon: gunicorn 400"),
        ("te-tab-value", b"Transfer-Encoding:\tchunked\r\n", "HTAB is legal OWS"),
        ("te-vtab-value", b"Transfer-Encoding:\x0bchunked\r\n", "VT is a control character: gunicorn 400"),
        ("te-chunked-identity", b"Transfer-Encoding: chunked, identity\r\n", "identity after chunked: gunicorn 400"),
        ("te-identity-chunked", b"Transfer-Encoding: identity, chunked\r\n", "identity before chunked"),
        ("te-gzip-chunked", b"Transfer-Encoding: gzip, chunked\r\n", "accepted, connection then closed (gunicorn 23)"),
        ("te-chunked-chunked", b"Transfer-Encoding: chunked, chunked\r\n", "stacked chunked: gunicorn 400"),
        ("te-two-headers-same", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "two TE headers = stacked chunked"),
        ("te-two-headers-identity-chunked", b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", "two TE headers"),
        ("te-two-headers-chunked-identity", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "two TE headers, chunked not last"),
        ("te-uppercase", b"Transfer-Encoding: CHUNKED\r\n", "codings are case-insensitive"),
        ("te-quoted", b'Transfer-Encoding: "chunked"\r\n', "quoted coding is not chunked"),
        ("te-comma-empty", b"Transfer-Encoding: ,chunked\r\n", "empty list element"),
        ("te-name-underscore", b"Transfer_Encoding: chunked\r\n", "underscore name: not TE, dropped by gunicorn"),
    ]
    for name, te, note in te_obf:
        add(g, name, chunked(CHUNKED_HELLO, te=te), note)
    for name, te, note in te_obf[:1] + te_obf[3:5] + te_obf[6:8]:
        add(g, name + "+cl", chunked(CHUNKED_HELLO, te=te, extra=b"Content-Length: 4\r\n"), note + "; with Content-Length: 4 (TE.CL)")
    add(g, "cl-te-identity", post(b"Content-Length: 5\r\nTransfer-Encoding: identity\r\n", b"hello"), "CL plus TE: identity")
    add(g, "te-http10", chunked(CHUNKED_HELLO).replace(b"HTTP/1.1", b"HTTP/1.0", 1), "chunked on HTTP/1.0: gunicorn 400")
    add(g, "te-http10-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 15\r\n", CHUNKED_HELLO, version=b"1.0"), "HTTP/1.0 with TE and CL")

    g = "content-length"
    cl = [
        ("cl-dup-same", b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello", "duplicate Content-Length: gunicorn 400"),
        ("cl-dup-different", b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!", "conflicting Content-Length: gunicorn 400"),
        ("cl-list", b"Content-Length: 5, 5\r\n", b"hello", "list form: gunicorn 400"),
        ("cl-plus", b"Content-Length: +5\r\n", b"hello", "signed: gunicorn 400"),
        ("cl-minus", b"Content-Length: -1\r\n", b"hello", "negative: gunicorn 400"),
        ("cl-hex", b"Content-Length: 0x5\r\n", b"hello", "hex: gunicorn 400"),
        ("cl-leading-space", b"Content-Length:  5\r\n", b"hello", "extra OWS is legal"),
        ("cl-trailing-space", b"Content-Length: 5 \r\n", b"hello", "trailing OWS is legal"),
        ("cl-tab", b"Content-Length:\t5\r\n", b"hello", "HTAB is legal OWS"),
        ("cl-inner-space", b"Content-Length: 5 5\r\n", b"hello", "not a number"),
        ("cl-leading-zeros", b"Content-Length: 0005\r\n", b"hello", "1*DIGIT: leading zeros are legal"),
        ("cl-leading-zeros-1k", b"Content-Length: " + b"0" * 1100 + b"5\r\n", b"hello",
         "1,100 leading zeros: legal; ferricorn serves it, then trusts nothing after it on the connection"),
        ("cl-decimal", b"Content-Length: 5.0\r\n", b"hello", "not 1*DIGIT"),
        ("cl-empty", b"Content-Length: \r\n", b"hello", "empty value"),
        ("cl-huge", b"Content-Length: 99999999999999999999\r\n", b"hello", "overflows 64 bits"),
        ("cl-2pow63", b"Content-Length: 9223372036854775808\r\n", b"hello", "2**63"),
        ("cl-too-short", b"Content-Length: 3\r\n", b"hello", "two extra bytes become the next request"),
        ("cl-underscore-name", b"Content_Length: 5\r\n", b"hello", "underscore name: not a Content-Length"),
        ("cl-space-before-colon", b"Content-Length : 5\r\n", b"hello", "whitespace before the colon: gunicorn 400"),
    ]
    for name, hdr, body, note in cl:
        add(g, name, post(hdr, body), note)
    add(g, "cl-on-get", req(b"GET /echo HTTP/1.1", H + b"Content-Length: 5\r\n", b"hello", True), "a GET with a body")

    g = "chunked-body"
    bodies = [
        ("chunk-size-overflow", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "size overflows 64 bits"),
        ("chunk-size-2pow64", b"10000000000000000\r\nhello\r\n0\r\n\r\n", "2**64"),
        ("chunk-size-leading-zeros", b"0000000000000000000005\r\nhello\r\n0\r\n\r\n", "leading zeros are legal"),
        ("chunk-size-empty", b"\r\nhello\r\n0\r\n\r\n", "empty size: gunicorn 400"),
        ("chunk-size-0x", b"0x5\r\nhello\r\n0\r\n\r\n", "hex prefix: gunicorn 400"),
        ("chunk-size-negative", b"-5\r\nhello\r\n0\r\n\r\n", "negative size"),
        ("chunk-size-plus", b"+5\r\nhello\r\n0\r\n\r\n", "signed size"),
        ("chunk-size-leading-space", b" 5\r\nhello\r\n0\r\n\r\n", "leading whitespace: gunicorn 400"),
        ("chunk-size-trailing-space", b"5 \r\nhello\r\n0\r\n\r\n", "trailing whitespace without ;ext"),
        ("chunk-size-trailing-tab", b"5\t\r\nhello\r\n0\r\n\r\n", "trailing HTAB without ;ext"),
        ("chunk-size-space-ext", b"5 ;a=b\r\nhello\r\n0\r\n\r\n", "BWS before ;ext is allowed"),
        ("chunk-ext-valid", b"5;name=value\r\nhello\r\n0;last\r\n\r\n", "valid extensions"),
        ("chunk-ext-quoted", b'5;name="va lue"\r\nhello\r\n0\r\n\r\n', "quoted-string extension value"),
        ("chunk-ext-nul", b"5;na\x00me\r\nhello\r\n0\r\n\r\n", "NUL in an extension"),
        ("chunk-ext-bare-cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n", "bare CR in an extension: gunicorn 400 (25.3)"),
        ("chunk-ext-bare-lf", b"5;a\nhello\r\n0\r\n\r\n", "extension ended by a bare LF"),
        ("chunk-ext-empty", b"5;\r\nhello\r\n0\r\n\r\n", "`;` without a name: gunicorn 400 (CHUNK_EXT_RE)"),
        ("chunk-ext-no-value", b"5;a=\r\nhello\r\n0\r\n\r\n", "`=` without a value"),
        ("chunk-ext-trailing-semicolon", b"5;a=b;\r\nhello\r\n0\r\n\r\n", "a `;` ending the line"),
        ("chunk-ext-open-quote", b'5;a="b\r\nhello\r\n0\r\n\r\n', "an unterminated quoted string"),
        ("chunk-ext-trailing-space", b"5;a=b \r\nhello\r\n0\r\n\r\n", "whitespace after the last extension"),
        ("chunk-ext-ctl", b"5;a\x01b\r\nhello\r\n0\r\n\r\n", "control byte in an extension"),
        ("chunk-ext-del", b"5;a\x7fb\r\nhello\r\n0\r\n\r\n", "DEL in an extension"),
        ("chunk-ext-8bit", b"5;a\xffb\r\nhello\r\n0\r\n\r\n", "0xFF in an extension"),
        ("chunk-ext-long", b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n", "5000-byte extension"),
        ("chunk-ext-10kb", b"5;" + b"a" * 10000 + b"\r\nhello\r\n0\r\n\r\n", "10 KB extension (gunicorn bounds the size line at 8190 only while no CRLF has arrived yet)"),
        ("chunk-data-no-crlf", b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF: gunicorn 400"),
        ("chunk-data-too-long", b"3\r\nhello\r\n0\r\n\r\n", "more data than the size says"),
        ("chunk-bare-lf", b"5\nhello\n0\n\n", "bare LF line endings in the chunked body"),
        ("chunk-size-bare-lf", b"5\nhello\r\n0\r\n\r\n", "bare LF after the chunk size"),
        ("chunk-missing-final-crlf", b"5\r\nhello\r\n0\r\n", "last chunk without the empty line that ends the trailers (follow-up becomes trailers)"),
        ("chunk-missing-last-chunk", b"5\r\nhello\r\n", "no last chunk at all (follow-up parsed as a chunk size)"),
        ("chunk-trailer-valid", b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", "a valid trailer"),
        ("chunk-trailer-content-length", b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", "forbidden trailer: gunicorn 400 (26.0)"),
        ("chunk-trailer-host", b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n", "forbidden trailer: gunicorn 400 (26.0)"),
        ("chunk-trailer-no-colon", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n", "trailer line without a colon"),
        ("chunk-trailer-obs-fold", b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", "obs-fold in the trailers"),
    ]
    for name, body, note in bodies:
        add(g, name, chunked(body), note)
    add(g, "chunk-missing-final-crlf-nofollow", chunked(b"5\r\nhello\r\n0\r\n", follow=False), "the same without a follow-up: the server must wait")

    g = "line-endings"
    add(g, "bare-lf-everywhere", b"GET /environ HTTP/1.1\nHost: x\n\n", "bare LF for every line")
    add(g, "bare-lf-request-line", b"GET /environ HTTP/1.1\nHost: x\r\n\r\n", "bare LF after the request line")
    add(g, "bare-lf-header", b"GET /environ HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", "bare LF after a header")
    add(g, "bare-lf-end-of-headers", b"GET /environ HTTP/1.1\r\nHost: x\r\n\n", "headers ended by CRLF LF")
    add(g, "bare-lf-cl-body", b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello" + FOLLOW, "bare-LF POST with a body and a follow-up")
    add(g, "bare-cr-request-line", b"GET /environ HTTP/1.1\rHost: x\r\n\r\n", "bare CR after the request line")
    add(g, "bare-cr-header-value", get_environ(b"X-A: a\rb\r\n"), "bare CR in a value: gunicorn 400")
    add(g, "bare-cr-between-headers", b"GET /environ HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", "bare CR as a line separator")
    add(g, "obs-fold", get_environ(b"X-Folded: a\r\n b\r\n"), "obs-fold: gunicorn 400 (23.0)")
    add(g, "obs-fold-tab", get_environ(b"X-Folded: a\r\n\tb\r\n"), "obs-fold with HTAB: gunicorn 400")
    add(g, "obs-fold-first-header", b"GET /environ HTTP/1.1\r\n Host: x\r\n\r\n", "continuation line before any header")
    add(g, "obs-fold-content-length", post(b"Content-Length:\r\n 5\r\n", b"hello"), "Content-Length value on a continuation line")
    add(g, "leading-crlf", b"\r\n" + get_environ(), "an empty line before the request line (RFC 9112 2.2: SHOULD ignore)")
    add(g, "two-leading-crlf", b"\r\n\r\n" + get_environ(), "two empty lines before the request line: gunicorn skips one only")
    add(g, "crlf-only", b"\r\n\r\n", "empty lines and nothing else")
    add(g, "unfinished-long-line", b"GET /" + b"a" * 5000, "a request line past the limit with no end yet: gunicorn 414 at once",
        display="GET /aaaa... (5005 bytes, no CRLF)")
    add(g, "leading-bare-lf", b"\n" + get_environ(), "a bare LF before the request line: gunicorn skips only a CRLF")
    add(g, "long-fragment", get_environ(line=b"GET /environ#" + b"a" * 5000 + b" HTTP/1.1"),
        "a fragment pushing the request line past the limit: gunicorn 414", display="GET /environ#aaaa... (5000-byte fragment)")
    add(g, "non-ascii-past-1k", get_environ(line=b"GET /environ?" + b"a" * 1100 + "é".encode() + b" HTTP/1.1"),
        "valid UTF-8 in the target after its first 1,024 bytes: gunicorn 400", display="GET /environ?aaaa...é (1,100 a)")
    add(g, "leading-space", b" " + get_environ(), "a space before the method")

    g = "headers"
    add(g, "space-before-colon", get_environ(b"X-Space : a\r\n"), "gunicorn 400")
    add(g, "tab-before-colon", get_environ(b"X-Tab\t: a\r\n"), "gunicorn 400")
    add(g, "no-colon", get_environ(b"X-No-Colon\r\n"), "gunicorn 400")
    add(g, "empty-name", get_environ(b": no-name\r\n"), "gunicorn 400")
    add(g, "name-paren", get_environ(b"X(Bad): token\r\n"), "not a token: gunicorn 400")
    add(g, "name-at", get_environ(b"X@Y: v\r\n"), "not a token: gunicorn 400")
    add(g, "name-quote", get_environ(b'X"Y: v\r\n'), "not a token: gunicorn 400")
    add(g, "name-8bit", get_environ(b"X-\xff: v\r\n"), "non-ASCII name: gunicorn 400")
    add(g, "name-nul", get_environ(b"X\x00Y: v\r\n"), "NUL in a name")
    add(g, "name-underscore", get_environ(b"X_Foo: v\r\n"), "underscore: dropped by gunicorn")
    add(g, "value-nul", get_environ(b"X-Nul: a\x00b\r\n"), "NUL in a value: gunicorn 400")
    add(g, "value-ctl", get_environ(b"X-Ctl: a\x01b\r\n"), "control byte: gunicorn 400")
    add(g, "value-del", get_environ(b"X-Del: a\x7fb\r\n"), "DEL: gunicorn 400")
    add(g, "value-8bit", get_environ(b"X-Obs: caf\xe9\r\n"), "obs-text is legal")
    add(g, "value-empty", get_environ(b"X-Empty:\r\n"), "empty value is legal")
    add(g, "headers-200", get_environ(b"".join(b"X-H%d: v\r\n" % i for i in range(200))), "over limit_request_fields=100: gunicorn 431", "GET /environ HTTP/1.1␍␊Host: x␍␊X-H0: v␍␊ … X-H199: v␍␊␍␊ (200 headers)")
    add(g, "header-20kb", get_environ(b"X-Big: " + b"a" * 20000 + b"\r\n"), "over limit_request_field_size=8190: gunicorn 431")
    add(g, "header-8kb-total-32kb", get_environ(b"".join(b"X-B%d: " % i + b"a" * 8000 + b"\r\n" for i in range(4))), "four 8 KB headers (each under the field limit)")

    g = "request-line"
    add(g, "request-line-10kb", req(b"GET /environ?" + b"a" * 10000 + b" HTTP/1.1"), "over limit_request_line=4094: gunicorn 27 414")
    add(g, "method-lowercase", get_environ(line=b"get /environ HTTP/1.1"), "lowercase method: gunicorn 400")
    add(g, "method-mixedcase", get_environ(line=b"Get /environ HTTP/1.1"), "lowercase letters: gunicorn 400")
    add(g, "method-too-long", get_environ(line=b"ABCDEFGHIJKLMNOPQRSTU /environ HTTP/1.1"), "21 characters: gunicorn 400")
    add(g, "method-20-chars", get_environ(line=b"ABCDEFGHIJKLMNOPQRST /environ HTTP/1.1"), "20 characters: allowed")
    add(g, "method-very-long", get_environ(line=b"A" * 1000 + b" /environ HTTP/1.1"), "1000 characters")
    add(g, "method-too-short", get_environ(line=b"GE /environ HTTP/1.1"), "2 characters: gunicorn 400")
    add(g, "method-hash", get_environ(line=b"G#T /environ HTTP/1.1"), "'#': gunicorn 400")
    add(g, "method-at", get_environ(line=b"G@T /environ HTTP/1.1"), "not a token: gunicorn 400")
    add(g, "method-slash", get_environ(line=b"GET/ /environ HTTP/1.1"), "not a token")
    add(g, "method-nul", get_environ(line=b"GE\x00T /environ HTTP/1.1"), "NUL in the method")
    add(g, "method-unknown-token", get_environ(line=b"PROPFIND /environ HTTP/1.1"), "unknown but valid token")
    add(g, "method-empty", get_environ(line=b" /environ HTTP/1.1"), "empty method")
    add(g, "double-space", get_environ(line=b"GET  /environ HTTP/1.1"), "two spaces: gunicorn 400 (exactly 3 parts)")
    add(g, "tab-separator", get_environ(line=b"GET\t/environ\tHTTP/1.1"), "HTAB as separator")
    add(g, "trailing-space", get_environ(line=b"GET /environ HTTP/1.1 "), "space after the version")
    add(g, "four-parts", get_environ(line=b"GET /environ HTTP/1.1 extra"), "4 parts")
    add(g, "two-parts", get_environ(line=b"GET /environ"), "no version")
    add(g, "uri-nul", get_environ(line=b"GET /env\x00iron HTTP/1.1"), "NUL in the target")
    add(g, "uri-ctl", get_environ(line=b"GET /env\x01iron HTTP/1.1"), "control byte in the target")
    add(g, "uri-del", get_environ(line=b"GET /env\x7firon HTTP/1.1"), "DEL in the target")
    add(g, "uri-8bit", get_environ(line=b"GET /environ?caf\xe9 HTTP/1.1"), "raw 0xE9 in the query")
    add(g, "uri-fragment", get_environ(line=b"GET /environ#frag HTTP/1.1"), "fragment in the target")
    add(g, "uri-percent-nul", get_environ(line=b"GET /env%00iron HTTP/1.1"), "%00 in the path")
    add(g, "uri-empty", get_environ(line=b"GET  HTTP/1.1"), "empty target: gunicorn 400 (23.0)")
    add(g, "uri-relative", get_environ(line=b"GET environ HTTP/1.1"), "relative reference: gunicorn 400 (26.0)")
    add(g, "uri-double-slash", get_environ(line=b"GET //environ HTTP/1.1"), "path starting with //")

    g = "version"
    for name, v, note in [
        ("version-1.2", b"HTTP/1.2", "gunicorn accepts 1.0 <= v < 2.0"),
        ("version-2.0", b"HTTP/2.0", "gunicorn 400"),
        ("version-1", b"HTTP/1", "not HTTP/d.d: gunicorn 400"),
        ("version-lowercase", b"http/1.1", "case-sensitive: gunicorn 400"),
        ("version-01.1", b"HTTP/01.1", "two digits: gunicorn 400"),
        ("version-1.10", b"HTTP/1.10", "two digits: gunicorn 400"),
        ("version-0.9", b"HTTP/0.9", "below 1.0: gunicorn 400"),
        ("version-1.0", b"HTTP/1.0", "control case"),
        ("version-9.9", b"HTTP/9.9", "gunicorn 400"),
        ("version-httx", b"HTTX/1.1", "wrong protocol name"),
    ]:
        add(g, name, get_environ(line=b"GET /environ " + v), note)
    add(g, "http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2 prior-knowledge preface on a cleartext HTTP/1 listener")
    add(g, "http09", b"GET /\r\n", "HTTP/0.9 simple request")
    add(g, "http09-environ", b"GET /environ\r\n\r\n", "HTTP/0.9-style line, then an empty line")

    g = "targets"
    add(g, "absolute-form", get_environ(line=b"GET http://example.com/environ?q=1 HTTP/1.1"), "absolute-form is legal")
    add(g, "absolute-form-https", get_environ(line=b"GET https://example.com/environ HTTP/1.1"), "absolute-form, https")
    add(g, "absolute-form-no-path", get_environ(line=b"GET http://example.com HTTP/1.1"), "absolute-form without a path")
    add(g, "absolute-form-userinfo", get_environ(line=b"GET http://user:pw@example.com/environ HTTP/1.1"), "userinfo in the target")
    add(g, "authority-connect", req(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443\r\n"), "authority-form with CONNECT")
    add(g, "authority-get", get_environ(line=b"GET example.com:443 HTTP/1.1"), "authority-form only with CONNECT: gunicorn 400 (26.0)")
    add(g, "connect-origin-form", req(b"CONNECT /environ HTTP/1.1"), "CONNECT with an origin-form target")
    add(g, "asterisk-get", get_environ(line=b"GET * HTTP/1.1"), "'*' only with OPTIONS: gunicorn 400 (26.0)")
    add(g, "asterisk-post", post(b"Content-Length: 5\r\n", b"hello", path=b"*"), "'*' with POST")
    add(g, "asterisk-options", req(b"OPTIONS * HTTP/1.1"), "legal")

    g = "expect"
    add(g, "expect-100-with-body", post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"hello"), "100-continue with the body already sent")
    add(g, "expect-100-no-body-sent", post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"", follow=False), "100-continue, body never sent: the server waits")
    add(g, "expect-100-cl0", post(b"Content-Length: 0\r\nExpect: 100-continue\r\n", b""), "100-continue with an empty body")
    add(g, "expect-100-get", get_environ(b"Expect: 100-continue\r\n"), "100-continue on a GET without a body")
    add(g, "expect-100-chunked", chunked(CHUNKED_HELLO, extra=b"Expect: 100-continue\r\n"), "100-continue with a chunked body")
    add(g, "expect-100-uppercase", post(b"Content-Length: 5\r\nExpect: 100-Continue\r\n", b"hello"), "expectation is case-insensitive")
    add(g, "expect-100-http10", post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"hello", version=b"1.0", follow=False), "ignored on HTTP/1.0")
    add(g, "expect-foo", post(b"Content-Length: 5\r\nExpect: foo\r\n", b"hello"), "unknown expectation: gunicorn 417")
    add(g, "expect-foo-get", get_environ(b"Expect: foo\r\n"), "unknown expectation on a GET: gunicorn 417")
    add(g, "expect-foo-http10", post(b"Content-Length: 5\r\nExpect: foo\r\n", b"hello", version=b"1.0", follow=False), "gunicorn: 417 on any version (only 100-continue is ignored on 1.0)")
    add(g, "expect-empty", get_environ(b"Expect: \r\n"), "empty expectation")
    add(g, "expect-two", post(b"Content-Length: 5\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n", b"hello"), "two Expect headers")

    g = "pipelining"
    add(g, "pipelined-junk", b"GET / HTTP/1.1\r\nHost: x\r\n\r\nJUNK\r\n\r\n", "valid request, then junk")
    add(g, "pipelined-two-valid", get_environ() + FOLLOW, "two valid requests")
    add(g, "pipelined-partial", get_environ() + b"GET /environ HTTP/1.1\r\nHost:", "valid request, then half a request: the server waits")
    add(g, "pipelined-binary-junk", get_environ() + b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 16, "valid request, then a TLS ClientHello")
    add(g, "pipelined-after-close", req(b"GET /environ HTTP/1.1", H + b"Connection: close\r\n") + FOLLOW, "requests after Connection: close must not be served")
    add(g, "pipelined-http10", req(b"GET /environ HTTP/1.0") + FOLLOW, "HTTP/1.0 without keep-alive, then a pipelined request")
    add(g, "upgrade-h2c", get_environ(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n") + FOLLOW, "h2c upgrade request (HTTP/2 is off by default)")
    add(g, "upgrade-websocket", get_environ(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") + FOLLOW, "WebSocket upgrade to a WSGI app")
    add(g, "tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40, "TLS on the cleartext port")
    add(g, "empty-lines-only", b"\r\n\r\n\r\n\r\n", "only empty lines: the server waits or closes")

    g = "host"
    add(g, "host-missing-http11", b"GET /environ HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host (RFC 9112 3.2: MUST 400; gunicorn accepts)")
    add(g, "host-missing-http10", b"GET /environ HTTP/1.0\r\n\r\n", "legal")
    add(g, "host-two", get_environ(b"Host: y\r\n"), "duplicate Host: gunicorn 400 (26.1)")
    add(g, "host-two-same", get_environ(b"Host: x\r\n"), "duplicate Host, same value")
    add(g, "host-empty", b"GET /environ HTTP/1.1\r\nHost:\r\n\r\n", "empty Host is legal")
    add(g, "host-space", b"GET /environ HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", "space inside Host")
    add(g, "host-slash", b"GET /environ HTTP/1.1\r\nHost: a/b\r\n\r\n", "'/' inside Host")
    add(g, "host-at", b"GET /environ HTTP/1.1\r\nHost: user@evil.com\r\n\r\n", "'@' inside Host")
    add(g, "host-bad-port", b"GET /environ HTTP/1.1\r\nHost: x:99999999\r\n\r\n", "port out of range")
    add(g, "host-8bit", b"GET /environ HTTP/1.1\r\nHost: \xe9x.com\r\n\r\n", "non-ASCII Host")
    add(g, "host-ctl", b"GET /environ HTTP/1.1\r\nHost: a\x01b\r\n\r\n", "control byte: gunicorn 400")
    add(g, "host-vs-absolute-form", req(b"GET http://a.example/environ HTTP/1.1", b"Host: b.example\r\n"), "Host differs from the absolute-form authority")
    add(g, "content-type-two", get_environ(b"Content-Type: a\r\nContent-Type: b\r\n"), "duplicate Content-Type: gunicorn 400 (26.1)")

    names = [x.name for x in c]
    assert len(names) == len(set(names)), "duplicate case names"
    return c


CASES = _cases()


# ---------------------------------------------------------------------------------------
# Servers


def venv_exe(name: str) -> Optional[str]:
    """The executable `name` next to the running Python (the project's .venv), else on PATH."""
    here = os.path.dirname(sys.executable)
    return shutil.which(name, path=here + os.pathsep + str(REPO / ".venv" / "bin") + os.pathsep + os.environ.get("PATH", ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`<exe> -w 1 -b 127.0.0.1:PORT [extra] testapp:app`, run from tests/apps."""

    def __init__(self, label: str, exe: str, extra=(), log_path=None):
        self.label = label
        self.port = free_port()
        self.log_path = Path(log_path) if log_path else Path(os.devnull)
        env = dict(os.environ)
        for k in ("GUNICORN_CMD_ARGS", "FERRICORN_CMD_ARGS", "PORT", "WEB_CONCURRENCY"):
            env.pop(k, None)
        env["PYTHONPATH"] = os.pathsep.join([str(APPS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        self.argv = [exe, "-w", "1", "-b", f"127.0.0.1:{self.port}", *extra, "testapp:app"]
        self._log = open(self.log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, cwd=APPS, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout=20.0):
        """Up once a plain GET / is answered (the master binds before the worker boots)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    s.settimeout(2.0)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} did not start:\n{self.log()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


# Cases run in parallel, and a case whose body never arrives keeps an application thread
# blocked in wsgi.input.read() until the client gives up: both servers get THREADS threads
# so that one waiting case cannot delay the others into a false "timeout".
# scripts/hostile_matrix.py re-runs every case one at a time against the plain commands
# (`gunicorn -w 1` = sync worker, `ferricorn -w 1`) as a cross-check.
THREADS = 32


def start_gunicorn(worker="gthread", log_path=None, wait=True) -> Server:
    exe = venv_exe("gunicorn")
    if exe is None:
        raise FileNotFoundError("gunicorn is not installed")
    extra = ["--no-control-socket"]  # else every gunicorn shares ~/.gunicorn/gunicorn.ctl
    if worker == "gthread":
        extra += ["-k", "gthread", "--threads", str(THREADS)]
    srv = Server(f"gunicorn-{worker}", exe, extra, log_path)
    return srv.wait_ready() if wait else srv


def start_ferricorn(threads=THREADS, log_path=None, wait=True) -> Server:
    exe = venv_exe("ferricorn")
    if exe is None:
        raise FileNotFoundError("ferricorn is not installed")
    srv = Server("ferricorn", exe, ["--threads", str(threads)] if threads else [], log_path)
    return srv.wait_ready() if wait else srv


# ---------------------------------------------------------------------------------------
# Sending a case and reading what comes back


@dataclass
class Response:
    status_line: str
    status: int
    view: Optional[tuple]  # what the app saw, for 2xx answers of testapp routes

    def short(self) -> str:
        s = str(self.status)
        if not self.status_line.startswith("HTTP/1.1 "):
            s = self.status_line.split(" ", 1)[0].replace("HTTP/", "") + "/" + s
        if self.view:
            if self.view[0] == "echo":
                s += f"[echo {len(self.view[1])}B]"
            elif self.view[0] == "environ":
                _, m, p, q = self.view
                s += f"[{m} {p}{'?' + q if q else ''}]"
            elif self.view[0] == "hello":
                s += "[hello]"
            else:
                s += f"[{self.view[0]}]"
        return s


@dataclass
class Outcome:
    responses: list = field(default_factory=list)
    closed: object = False  # True (FIN), "reset", or False (still open after READ_TIMEOUT)
    leftover: bytes = b""  # bytes after the last response that did not parse as one
    send_error: str = ""

    @property
    def finals(self) -> list:
        return [r for r in self.responses if r.status >= 200]

    @property
    def first(self) -> Optional[int]:
        f = self.finals
        return f[0].status if f else None

    @property
    def timed_out(self) -> bool:
        """No final response and the server kept the connection open: it is waiting for bytes."""
        return not self.finals and not self.closed

    def short(self) -> str:
        parts = [r.short() for r in self.responses]
        if self.leftover:
            parts.append(f"garbage {self.leftover[:20]!r}")
        if self.timed_out:
            parts.append("timeout")
        elif self.closed == "reset":
            parts.append("reset")
        elif self.closed:
            parts.append("close")
        else:
            parts.append("open")
        return " ".join(parts)

    def detail(self) -> str:
        lines = [f"{r.status_line!r}" + (f" app saw {r.view!r}"[:200] if r.view else "") for r in self.responses]
        if self.leftover:
            lines.append(f"unparsed bytes {self.leftover[:80]!r}")
        lines.append("timeout (waiting for more bytes)" if self.timed_out else "closed" if self.closed else "left open")
        return "; ".join(lines)


def exchange(port: int, data: bytes, timeout: float = READ_TIMEOUT) -> Outcome:
    out = Outcome()
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        try:
            s.sendall(data)
        except OSError as e:  # the server answered and closed before reading everything
            out.send_error = type(e).__name__
        s.settimeout(timeout)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    out.closed = True
                    break
                buf += b
        except socket.timeout:
            pass
        except ConnectionResetError:
            out.closed = "reset"
    out.responses, out.leftover = parse_responses(buf)
    return out


def parse_responses(buf: bytes):
    responses = []
    while buf:
        if not buf.startswith(b"HTTP/") or b"\r\n\r\n" not in buf:
            return responses, buf
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0]
        try:
            status = int(status_line.split(" ")[1])
        except (IndexError, ValueError):
            return responses, head + b"\r\n\r\n" + buf
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if 100 <= status < 200 or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, buf = _dechunk(buf)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, buf = buf[:n], buf[n:]
        else:
            body, buf = buf, b""
        responses.append(Response(status_line, status, _view(status, headers, body)))
    return responses, b""


def _dechunk(buf: bytes):
    body = b""
    while b"\r\n" in buf:
        line, buf = buf.split(b"\r\n", 1)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while b"\r\n" in buf:
                t, buf = buf.split(b"\r\n", 1)
                if not t:
                    break
            return body, buf
        body, buf = body + buf[:size], buf[size + 2 :]
    return body, buf


def _view(status: int, headers: dict, body: bytes) -> Optional[tuple]:
    if not 200 <= status < 300:
        return None
    ctype = headers.get("content-type", "")
    if ctype == "application/octet-stream":
        return ("echo", body)
    if ctype == "application/json":
        try:
            env = json.loads(body)
            return ("environ", env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"])
        except (ValueError, KeyError, TypeError):
            return ("json?", body[:100])
    if body == HELLO:
        return ("hello",)
    return ("other", body[:100])


def run_cases(port: int, cases=None, parallel: int = 32, timeout: float = READ_TIMEOUT) -> dict:
    """{case name: Outcome}, each case on its own connection; `parallel` at a time."""
    cases = CASES if cases is None else cases
    if parallel <= 1:
        return {c.name: exchange(port, c.data, timeout) for c in cases}
    with ThreadPoolExecutor(parallel) as pool:
        futs = {c.name: pool.submit(exchange, port, c.data, timeout) for c in cases}
        return {name: f.result() for name, f in futs.items()}


RECHECK_TIMEOUT = 4.0


def run_matrix(g_port: int, f_port: int, parallel: int = 32):
    """Both servers' {case name: Outcome}. A verdict that rests on a wait (one side timed
    out, the other did not) is re-checked with RECHECK_TIMEOUT seconds of patience, all
    such cases at once, so that a slow machine cannot turn a late answer into a timeout."""
    with ThreadPoolExecutor(2) as pool:
        gf = pool.submit(run_cases, g_port, None, parallel)
        ff = pool.submit(run_cases, f_port, None, parallel)
        G, F = gf.result(), ff.result()
    redo = [c for c in CASES if G[c.name].timed_out != F[c.name].timed_out]
    if redo:
        with ThreadPoolExecutor(2) as pool:
            gf = pool.submit(run_cases, g_port, redo, parallel, RECHECK_TIMEOUT)
            ff = pool.submit(run_cases, f_port, redo, parallel, RECHECK_TIMEOUT)
            G.update(gf.result())
            F.update(ff.result())
    return G, F


# ---------------------------------------------------------------------------------------
# Verdict


def _rejects(r: Optional[Response]) -> bool:
    return r is None or r.status >= 400


def verdict(g: Outcome, f: Outcome):
    """("same" | "stricter" | "both reject" | "DIFFERENT", reason).

    Rules, over the final (non-1xx) responses of the connection, in order:
    * ferricorn answering a request with an error, or not at all (waiting or closing),
      is always allowed: from there on ferricorn rejected the rest of the connection.
      Where Gunicorn served that request the verdict is "stricter".
    * ferricorn serving a request Gunicorn rejected (error, waiting or close) is DIFFERENT.
    * where both served the i-th request, the status and what the app saw (echoed body
      bytes, or method, path and query) must be identical, otherwise DIFFERENT: the two
      servers framed the request differently.
    * ferricorn answering anything after an error response is DIFFERENT.
    First statuses that are equal give "same"; both rejecting the first request with
    different statuses (or one waiting) gives "both reject".
    """
    G, F = g.finals, f.finals
    stricter = ""
    for i in range(max(len(G), len(F))):
        gi = G[i] if i < len(G) else None
        fi = F[i] if i < len(F) else None
        if _rejects(fi):
            if fi is not None and i + 1 < len(F):
                return "DIFFERENT", f"ferricorn answered again after its {fi.status} on request #{i + 1}"
            if not _rejects(gi):
                what = f"{fi.status}" if fi else ("timeout" if f.timed_out else "no answer")
                stricter = f"request #{i + 1}: Gunicorn {gi.status}, ferricorn {what}"
            break
        if _rejects(gi):
            what = f"{gi.status}" if gi else ("timeout" if g.timed_out else "no answer")
            return "DIFFERENT", f"ferricorn served request #{i + 1} ({fi.short()}), Gunicorn: {what}"
        if fi.status != gi.status:
            return "DIFFERENT", f"request #{i + 1}: status {gi.status} vs {fi.status}"
        if fi.view != gi.view:
            return "DIFFERENT", f"request #{i + 1} framed differently: Gunicorn app saw {gi.short()}, ferricorn {fi.short()}"
    if stricter:
        return "stricter", stricter
    if g.first == f.first and (g.first is not None or g.timed_out == f.timed_out):
        return "same", ""
    gs = g.first if g.first is not None else ("timeout" if g.timed_out else "no answer")
    fs = f.first if f.first is not None else ("timeout" if f.timed_out else "no answer")
    return "both reject", f"Gunicorn {gs}, ferricorn {fs}"


# ---------------------------------------------------------------------------------------
# Display


def escape(data: bytes, limit: int = 150) -> str:
    """Bytes as a Python-ish escaped string; runs of 16+ identical bytes as {'a'x20000}."""
    out = []
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        run = j - i
        b = data[i]
        ch = {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x5C: "\\\\"}.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}")
        if run >= 16:
            out.append(f"{{{ch}×{run}}}")
        else:
            out.append(ch * run)
        i = j
    s = "".join(out)
    if len(s) > limit:
        s = s[:limit] + f"… ({len(data)} bytes)"
    return s
