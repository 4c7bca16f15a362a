"""The atheris targets in ``fuzz/``, bounded for the suite: each passes its seeds and a few
hundred random inputs, and each invariant check does catch what it is there to catch. The long
runs are ``python -m fuzz.run`` (docs/reliability.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz import targets


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_each_target_passes_its_seeds(name: str) -> None:
    for seed in targets.SEEDS[name]:
        targets.TARGETS[name](seed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(targets.TARGETS)), st.binary(max_size=512))
def test_each_target_holds_on_random_bytes(name: str, data: bytes) -> None:
    targets.TARGETS[name](data)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Blaxel-Preview-Token: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; __Host-bl_preview_token=t\r\n\r\n",
        b"GET /?bl_preview_token=t HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\nb\r\n\r\n",
    ],
    ids=["token-header", "token-cookie", "token-query", "two-hosts", "cl-and-te", "bare-lf"],
)
def test_the_forward_check_catches_a_leak_or_bad_framing(head: bytes) -> None:
    with pytest.raises(AssertionError):
        targets._check_forward(head)
