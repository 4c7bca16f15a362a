"""The Autobahn verdict (``bench/autobahn.py``): the pass sets through the gateway and direct
must be equal but for 7.9.5, and the messages of exactly ``ws_max_message_bytes`` must pass."""

from __future__ import annotations

from bench.autobahn import summarize


def index(**via: str) -> dict[str, dict[str, dict[str, str]]]:
    direct = {"1.1.1": "OK", "3.2": "OK", "7.9.5": "FAILED", "9.1.6": "OK", "9.2.6": "OK"}
    return {
        "direct-echo": {case: {"behavior": b} for case, b in direct.items()},
        "via-gateway": {case: {"behavior": via.get(case, b)} for case, b in direct.items()},
    }


def test_equal_pass_sets_with_non_strict_and_7_9_5_are_equal() -> None:
    summary = summarize(index(**{"3.2": "NON-STRICT", "7.9.5": "OK"}))
    assert summary["equal"] is True
    assert summary["failed"] == {"direct-echo": ["7.9.5"], "via-gateway": []}


def test_a_case_failing_only_through_the_gateway_is_unequal() -> None:
    summary = summarize(index(**{"1.1.1": "FAILED"}))
    assert summary["equal"] is False and summary["passed_only_direct"] == ["1.1.1"]


def test_the_16_mib_messages_must_pass_through_the_gateway() -> None:
    summary = summarize(index(**{"9.1.6": "FAILED"}))
    assert summary["equal"] is False and summary["must_pass_missing"] == ["9.1.6"]
