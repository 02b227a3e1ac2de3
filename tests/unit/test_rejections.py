"""Refusals are logged with a bound per instance, and the lines still add up to every one."""

from __future__ import annotations

import json

from omi_receiver.runtime.ingest.rejections import RejectionLog


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_first_refusal_of_a_reason_is_logged_at_once_with_its_fields(capsys):
    log = RejectionLog(clock=Clock(), flush_at_exit=False)
    log.rejected("invalid_uid", 400, uid="u1")
    [entry] = lines(capsys)
    assert entry == {
        "severity": "WARNING",
        "message": "chunk_rejected",
        "event": "chunk_rejected",
        "error": "invalid_uid",
        "status": 400,
        "count": 1,
        "uid": "u1",
    }


def test_a_flood_is_one_line_per_reason_per_window_and_the_counts_add_up(capsys):
    clock = Clock()
    log = RejectionLog(window_seconds=60, clock=clock, flush_at_exit=False)
    sent = {"unauthorized": 0, "method_not_allowed": 0}
    for _minute in range(3):
        for i in range(1000):
            clock.now += 0.05  # 1000 refusals in 50 s, then 10 s quiet
            reason = "unauthorized" if i % 4 else "method_not_allowed"
            log.rejected(reason, 401 if reason == "unauthorized" else 405)
            sent[reason] += 1
        clock.now += 10
    log.flush()
    entries = lines(capsys)
    assert len(entries) <= 2 * 2 * 3  # two lines per reason per window, at most
    totals = {reason: sum(e["count"] for e in entries if e["error"] == reason) for reason in sent}
    assert totals == sent
    summaries = [e for e in entries if e.get("suppressed")]
    assert summaries and all(e["count"] > 1 and "counted but not logged" in e["detail"] for e in summaries)


def test_an_accepted_request_writes_the_summary_of_a_finished_window(capsys):
    clock = Clock()
    log = RejectionLog(window_seconds=60, clock=clock, flush_at_exit=False)
    for _ in range(5):
        log.rejected("too_large", 413)
    log.tick()  # window still open: nothing yet
    assert len(lines(capsys)) == 1
    clock.now += 61
    log.tick()
    [summary] = lines(capsys)
    assert (summary["error"], summary["status"], summary["count"], summary["suppressed"]) == ("too_large", 413, 4, True)
    log.tick()  # written once
    assert lines(capsys) == []


def test_a_window_with_a_single_refusal_needs_no_summary(capsys):
    clock = Clock()
    log = RejectionLog(window_seconds=60, clock=clock, flush_at_exit=False)
    log.rejected("odd_length", 400)
    clock.now += 61
    log.rejected("odd_length", 400)  # a new window: logged at once again
    log.flush()
    assert [(e["error"], e["count"]) for e in lines(capsys)] == [("odd_length", 1), ("odd_length", 1)]
