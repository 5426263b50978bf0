"""The Event text of a kill names the victim's memray file, composed from the report's fields."""

from __future__ import annotations

import dataclasses

from rayguard_node.contract.reports import GUARD_KILL, Identity, NodeUsage, Report, Victim, new_report
from rayguard_operator.oom.messages import report_message

PATH = "/tmp/ray/session_2026-01-01_00-00-00_000000_1/logs/memray/4242-1191011.bin"


def test_the_event_says_where_the_profile_is() -> None:
    report = new_report(GUARD_KILL, Identity("demo", "default", "demo-worker-cpu-0", "cpu", "worker"),
                        Victim(4242, "ray::hog", 1 << 30), NodeUsage(3 << 30, 4 << 30, 0.75, 0.95), profile=PATH)
    received = Report.from_dict(report.to_dict())
    assert f"memray profile: {PATH} (rayguard profile fetch)." in report_message(received)
    # Composed again from the fields, never taken from the message a runtime sent.
    assert report_message(dataclasses.replace(received, message="forged")) == report.message
    assert "memray" not in report_message(dataclasses.replace(received, profile=None))
