"""Actor heap quotas: who is over for long enough, what is never touched, and the state API's
answer parsed."""

from __future__ import annotations

import signal

import pytest

from rayguard_node.cgroup.processes import IDLE_WORKER, RAYLET, WORKER, ProcessMemory
from rayguard_node.contract.reports import (KILL, QUOTA_EXCEEDED, WARN, Identity, NodeUsage, QuotaBreach, Report,
                                            Victim, new_report)
from rayguard_node.guard.actors import actors_url, node_id_of_raylet, parse_actors
from rayguard_node.guard.quota import ActorQuota, QuotaEnforcer, QuotaSettings, title_matches

MiB = 1 << 20
QUOTA = 300 * MiB


def actor_process(pid=42, name="ray::Big.grow", private=400 * MiB, shared=10 * MiB, cls=WORKER):
    return ProcessMemory(pid, name, cls, private + shared, shared, 1000)


ACTORS = {42: ActorQuota(42, "a1", "Big", "bigone", QUOTA)}


class Kills:
    def __init__(self):
        self.sent = []

    def __call__(self, pid, sig):
        self.sent.append((pid, sig))


def enforcer(mode=KILL, grace=5.0):
    kills = Kills()
    return QuotaEnforcer(QuotaSettings(mode, 1.2, grace), kills), kills


def test_an_actor_over_quota_times_tolerance_for_the_grace_period_is_killed_once():
    quota, kills = enforcer()
    assert quota.check([actor_process()], ACTORS, 100.0) == []  # over, grace starts
    assert quota.check([actor_process()], ACTORS, 104.9) == []
    [action] = quota.check([actor_process()], ACTORS, 105.0)
    assert kills.sent == [(42, signal.SIGKILL)]
    assert action.breach == QuotaBreach("Big", "bigone", "a1", QUOTA, 400 * MiB, 1.2, 5.0, KILL)
    assert quota.check([actor_process()], ACTORS, 106.0) == []  # once per episode
    assert len(kills.sent) == 1


def test_within_quota_times_tolerance_is_left_alone_and_resets_the_grace():
    quota, kills = enforcer()
    quota.check([actor_process()], ACTORS, 100.0)
    assert quota.check([actor_process(private=350 * MiB)], ACTORS, 103.0) == []  # 350 <= 360
    assert quota.check([actor_process()], ACTORS, 104.0) == []  # over again: a new grace
    assert quota.check([actor_process()], ACTORS, 108.9) == []
    assert len(quota.check([actor_process()], ACTORS, 109.0)) == 1


def test_warn_reports_once_per_episode_and_kills_nothing():
    quota, kills = enforcer(WARN, grace=0)
    [action] = quota.check([actor_process()], ACTORS, 100.0)
    assert action.breach.enforcement == WARN and kills.sent == []
    assert quota.check([actor_process()], ACTORS, 101.0) == []
    quota.check([actor_process(private=100 * MiB)], ACTORS, 102.0)  # back under
    assert len(quota.check([actor_process()], ACTORS, 103.0)) == 1  # a new episode


def test_off_does_nothing():
    quota, kills = enforcer("Off", grace=0)
    assert quota.check([actor_process()], ACTORS, 100.0) == [] and kills.sent == []


@pytest.mark.parametrize("process, actors", [
    (actor_process(pid=7), ACTORS),  # not an actor the state API named: a task, the driver
    (actor_process(), {42: ActorQuota(42, "a1", "Big", "", 0)}),  # no memory= quota
    (actor_process(cls=RAYLET, name="/ray/raylet"), ACTORS),  # a system process
    (actor_process(cls=IDLE_WORKER, name="ray::IDLE"), ACTORS),
    (actor_process(name="ray::Other.run"), ACTORS),  # the pid now belongs to another actor
    (actor_process(private=400 * MiB, shared=900 * MiB), ACTORS),  # mostly shared memory
])
def test_never_touched(process, actors):
    quota, kills = enforcer(grace=0)
    assert quota.check([process], actors, 100.0) == [] and kills.sent == []


def test_title_matches_the_actor_class_and_its_methods():
    actor = ACTORS[42]
    assert title_matches(actor_process(name="ray::Big"), actor)
    assert title_matches(actor_process(name="ray::Big.grow"), actor)
    assert not title_matches(actor_process(name="ray::Bigger.grow"), actor)


def test_a_vanished_actor_is_forgotten():
    quota, kills = enforcer(grace=1)
    quota.check([actor_process()], ACTORS, 100.0)
    quota.check([], ACTORS, 100.5)  # gone
    assert quota.check([actor_process()], ACTORS, 101.2) == []  # a new grace, not the old one


def test_the_quota_report_round_trips_and_says_what_happened():
    breach = QuotaBreach("Big", "bigone", "a1", QUOTA, 400 * MiB, 1.2, 5.0, KILL)
    report = new_report(QUOTA_EXCEEDED, Identity("demo", "default", "demo-worker-x", "cpu", "worker"),
                        Victim(42, "ray::Big.grow", 410 * MiB, 10 * MiB),
                        NodeUsage(1 << 30, 4 << 30, 0.25, 0.95), quota=breach)
    assert report.message.startswith("rayguard killed actor Big 'bigone' (pid 42) in pod demo-worker-x"
                                     " (group cpu): 400 MiB used, over its memory= quota of 300 MiB x 1.2")
    assert "raise the actor's memory= quota" in report.message
    assert Report.from_dict(report.to_dict()) == report
    warned = new_report(QUOTA_EXCEEDED, report.identity, report.victim, report.node,
                        quota=QuotaBreach("Big", "", "a1", QUOTA, 400 * MiB, 1.2, 5.0, WARN))
    assert "not killed (enforcement Warn)" in warned.message


def test_a_report_with_a_bad_quota_is_malformed():
    data = new_report(QUOTA_EXCEEDED, Identity(), Victim(1, "x"), NodeUsage(1, 2, 0.5, 0.9),
                      quota=QuotaBreach("Big", "", "", 1, 2, 1.2, 0, KILL)).to_dict()
    data["quota"]["enforcement"] = "Off"
    with pytest.raises(Exception, match="enforcement"):
        Report.from_dict(data)
    data["quota"] = {"actor_class": "Big"}
    with pytest.raises(Exception, match="malformed"):
        Report.from_dict(data)


# -- the state API ----------------------------------------------------------------------

NODE = "122b7b36"


def listing(*rows):
    return {"result": True, "data": {"result": {"total": len(rows), "result": list(rows)}}}


def row(pid=42, memory=314572800.0, node=NODE, state="ALIVE", **extra):
    return {"actor_id": "a1", "class_name": "Big", "state": state, "name": "bigone", "node_id": node,
            "pid": pid, "required_resources": {"memory": memory, "CPU": 1.0}, **extra}


def test_parse_actors_keeps_this_nodes_live_actors_with_a_quota():
    actors = parse_actors(listing(row(), row(pid=43, memory=None), row(pid=44, node="other"),
                                  row(pid=45, state="DEAD"), row(pid=0), {"junk": True}, "x"), NODE)
    assert actors == {42: ActorQuota(42, "a1", "Big", "bigone", 314572800)}


def test_parse_actors_refuses_what_is_not_a_state_api_answer():
    with pytest.raises(ValueError, match="state API"):
        parse_actors({"data": {}}, NODE)


def test_the_query_filters_by_state_and_node():
    url = actors_url("http://head:8265/", NODE)
    assert url.startswith("http://head:8265/api/v0/actors?detail=1&limit=10000")
    assert "filter_keys=state" in url and f"filter_values={NODE}" in url


def test_node_id_from_the_raylets_command_line():
    assert node_id_of_raylet("/x/raylet --raylet_socket_name=/s --node_id=abc123 --x=1") == "abc123"
    assert node_id_of_raylet("/x/raylet --node_ip_address=1.2.3.4") is None


# -- the directory, against a real HTTP server -------------------------------------------

class StateApi:
    """A tiny HTTP server that answers /api/v0/actors as the dashboard does."""

    def __init__(self):
        import http.server
        import json
        import threading

        api = self
        self.headers: list[str | None] = []
        self.answer: object = listing(row())
        self.status = 200

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                api.headers.append(self.headers.get("Authorization"))
                body = json.dumps(api.answer).encode()
                self.send_response(api.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_directory_polls_with_the_token_and_keeps_the_last_answer_on_failure(tmp_path, caplog):
    from rayguard_node.guard.actors import ActorDirectory

    api = StateApi()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    try:
        directory = ActorDirectory(api.url, lambda: NODE, token)
        directory.poll_once()
        assert directory.actors() == {42: ActorQuota(42, "a1", "Big", "bigone", 314572800)}
        assert api.headers == ["Bearer s3cret"]
        api.status = 500
        directory.poll_once()
        directory.poll_once()
        assert directory.actors() == {42: ActorQuota(42, "a1", "Big", "bigone", 314572800)}
        assert directory.failures == 2
        assert caplog.text.count("did not answer") == 1  # said once, not on every poll
        api.status, api.answer = 200, listing()
        directory.poll_once()
        assert directory.actors() == {}
    finally:
        api.close()


def test_the_directory_waits_for_the_raylet():
    from rayguard_node.guard.actors import ActorDirectory

    directory = ActorDirectory("http://127.0.0.1:9", lambda: None, None)
    directory.poll_once()
    assert directory.polls == 0 and directory.actors() == {}
