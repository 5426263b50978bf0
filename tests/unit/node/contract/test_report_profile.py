"""The report's optional `profile`: the victim's memray file, in JSON and in the one message."""

from __future__ import annotations

import json

import pytest

from rayguard_node.contract.reports import (GUARD_KILL, KINDS, QUOTA_EXCEEDED, KILL, Identity, NodeUsage,
                                            QuotaBreach, Report, TopEntry, Victim, compose_message,
                                            new_report, with_profile)

MiB, GiB = 1024**2, 1024**3
IDENTITY = Identity("demo", "default", "demo-worker-cpu-x7k2p", "cpu", "worker")
VICTIM = Victim(4242, "ray::hog", 1 * GiB, 0)
NODE = NodeUsage(3 * GiB, 4 * GiB, 0.75, 0.95)
PATH = "/tmp/ray/session_2026-01-01_00-00-00_000000_1/logs/memray/4242-1191011.bin"
BREACH = QuotaBreach("Holder", "big", "a1", 300 * MiB, 500 * MiB, 1.2, 5.0, KILL)


def report(kind: str = GUARD_KILL, profile: str | None = None) -> Report:
    return new_report(kind, IDENTITY, VICTIM, NODE, [TopEntry(4242, "ray::hog", GiB)],
                      clock=lambda: "2024-05-01T12:00:00.000Z", profile=profile,
                      quota=BREACH if kind == QUOTA_EXCEEDED else None)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_with_and_without_a_profile(kind: str) -> None:
    for profile in (None, PATH):
        original = report(kind, profile)
        assert Report.from_dict(json.loads(original.to_json())) == original
        assert ("profile" in original.to_dict()) is (profile is not None)


def test_the_message_says_where_the_profile_is() -> None:
    with_path, without = report(profile=PATH).message, report().message
    assert f"memray profile: {PATH} (rayguard profile fetch)." in with_path
    assert "memray" not in without
    assert with_path.replace(f" memray profile: {PATH} (rayguard profile fetch).", "") == without
    assert with_path.index("memray profile") < with_path.index("Advice:")  # cut last, if ever


def test_with_profile_is_new_report_with_it() -> None:
    plain = report(QUOTA_EXCEEDED)
    added = with_profile(plain, PATH)
    assert added.profile == PATH and added.id == plain.id and added.quota == plain.quota
    assert added.message == compose_message(plain.kind, plain.identity, plain.victim, plain.node, plain.top,
                                            plain.quota, PATH)
    assert added == Report.from_dict(added.to_dict())


def test_a_report_from_an_older_runtime_has_none() -> None:
    data = report(profile=PATH).to_dict()
    del data["profile"]
    assert Report.from_dict(data).profile is None
