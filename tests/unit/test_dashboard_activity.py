"""The overview's recent activity: the merge, its order, its words, and what an API's
failure leaves of it (no cloud needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cumulo.dashboard.activity import (
    action_words,
    failure_words,
    merge_activity,
    parse_api_time,
    recent_activity,
    relative_time,
)
from cumulo.dashboard.apis import ApiFailure

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def nova_time(seconds_ago: float) -> str:
    """A time as Nova writes it: no zone, microseconds."""
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f")


def action(name: str, seconds_ago: float, request_id: str, message: str | None = None) -> dict:
    return {
        "action": name,
        "start_time": nova_time(seconds_ago),
        "request_id": request_id,
        "user_id": "u-1",
        "message": message,
    }


def server(server_id: str, name: str, project: str = "p-1", **more) -> dict:
    return {"id": server_id, "name": name, "tenant_id": project, "status": "ACTIVE", **more}


def test_actions_of_several_servers_and_volumes_merge_newest_first_and_capped():
    web, db = server("s-web", "web"), server("s-db", "db")
    actions = {
        "s-web": [action("reboot", 30, "req-3"), action("create", 600, "req-1")],
        "s-db": [action("stop", 90, "req-2"), action("create", 7200, "req-0")],
    }
    volume = {
        "id": "v-1",
        "name": "data",
        "status": "in-use",
        "user_id": "u-2",
        "created_at": nova_time(3600),
        "updated_at": nova_time(5),
    }
    entries = merge_activity([web, db], actions, [volume], NOW, "p-1")
    assert [(e["what"], e["target"]["name"]) for e in entries] == [
        ("volume changed (now in-use)", "data"),
        ("reboot", "web"),
        ("stop", "db"),
        ("create", "web"),
        ("create volume", "data"),
        ("create", "db"),
    ]
    first_reboot = entries[1]
    assert first_reboot["ago"] == "30 seconds ago"
    assert first_reboot["iso"] == "2026-12-06T11:59:30Z"
    assert first_reboot["target"]["url"] == "/instances/s-web"
    assert (first_reboot["user_id"], first_reboot["request_id"]) == ("u-1", "req-3")
    assert first_reboot["result"] == "finished"
    # Cinder does not say who changed a volume; its creator created it.
    assert entries[0]["user_id"] == "" and entries[4]["user_id"] == "u-2"
    assert [e["what"] for e in merge_activity([web, db], actions, [], NOW, "p-1", limit=2)] == [
        "reboot",
        "stop",
    ]


def test_another_project_s_servers_and_volumes_are_left_out():
    mine, theirs = server("s-1", "mine"), server("s-2", "theirs", project="p-2")
    actions = {"s-1": [action("create", 60, "req-1")], "s-2": [action("create", 10, "req-2")]}
    volume = {
        "id": "v-9",
        "os-vol-tenant-attr:tenant_id": "p-2",
        "created_at": nova_time(5),
        "updated_at": nova_time(5),
    }
    entries = merge_activity([mine, theirs], actions, [volume], NOW, "p-1")
    assert [e["target"]["id"] for e in entries] == ["s-1"]


def test_a_busy_server_s_newest_action_is_in_progress_and_a_failed_one_an_error():
    busy = server("s-1", "busy", **{"OS-EXT-STS:task_state": "rebooting"})
    actions = {
        "s-1": [
            action("reboot", 2, "req-3"),
            action("resize", 50, "req-2", message="Error"),
            action("create", 100, "req-1"),
        ]
    }
    entries = merge_activity([busy], actions, [], NOW, "p-1")
    assert [(e["what"], e["result"]) for e in entries] == [
        ("reboot", "in progress"),
        ("resize", "error"),
        ("create", "finished"),
    ]
    assert entries[0]["ago"] == "just now"
    assert entries[1]["error"] == "Failed."


def test_a_failed_action_s_error_in_words_from_its_events_or_the_server_s_fault():
    events = [
        {"event": "conductor_build_instances", "result": "Success"},
        {"event": "compute_spawning", "result": "Error"},
    ]
    broken = server("s-1", "broken", status="ERROR", fault={"message": "No valid host was found."})
    # A member: no traceback, the server's fault says why (with the usual fix).
    words = failure_words(broken, {"events": events}, newest_failure=True)
    assert words.startswith("Failed at spawning: No valid host was found.")
    assert "try a smaller flavor" in words
    # An older failure of the same server is not what its fault is about.
    assert failure_words(broken, {"events": events}, newest_failure=False) == (
        "Failed at spawning."
    )
    # An admin sees the traceback: its last line is the message.
    traced = [{**events[1], "traceback": "Traceback:\n  File x\nRuntimeError: disk full\n"}]
    assert failure_words(broken, {"events": traced}, newest_failure=True) == (
        "Failed at spawning: RuntimeError: disk full"
    )
    assert failure_words(server("s-2", "x"), {"events": []}, newest_failure=True) == "Failed."


def test_action_names_and_times_in_plain_words():
    assert action_words("confirmResize") == "confirm resize"
    assert action_words("swap_volume") == "swap volume"
    assert action_words("shelve") == "shelve"
    assert action_words("attachInterface") == "attach interface"
    assert relative_time(NOW - timedelta(minutes=1, seconds=59), NOW) == "1 minute ago"
    assert relative_time(NOW - timedelta(hours=5), NOW) == "5 hours ago"
    assert relative_time(NOW - timedelta(days=2, hours=3), NOW) == "2 days ago"
    assert relative_time(NOW + timedelta(seconds=3), NOW) == "just now"
    assert parse_api_time("2026-12-06T11:00:00.000000") == NOW - timedelta(hours=1)
    assert parse_api_time("2026-12-06T11:00:00Z") == NOW - timedelta(hours=1)
    assert parse_api_time("not a time") is None and parse_api_time(None) is None


class FakeApi:
    """One service's answers by path (an ApiFailure is raised, as Api.get does)."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers, self.asked = answers, []

    async def get(self, path: str):
        self.asked.append(path)
        answer = self.answers[path]
        if isinstance(answer, ApiFailure):
            raise answer
        return answer


class FakeApis:
    def __init__(self, compute: dict[str, object], volume: dict[str, object]) -> None:
        self.compute, self.volume = FakeApi(compute), FakeApi(volume)


SERVERS = "/v2.1/servers/detail?sort_key=updated_at&limit=10"
VOLUMES = "/v3/volumes/detail?sort=updated_at:desc&limit=10"


def recent(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f")


async def test_one_failed_call_is_a_message_in_the_section_and_the_rest_still_shows():
    broken = server("s-3", "broken", status="ERROR", fault={"message": "Disk quota exceeded."})
    servers = [server("s-1", "fine"), server("s-2", "gone"), broken, server("s-4", "flaky")]
    failing = {**action("create", 0, "req-9", message="Error"), "start_time": recent(20)}
    apis = FakeApis(
        {
            SERVERS: {"servers": servers},
            "/v2.1/servers/s-1/os-instance-actions": {
                "instanceActions": [{**action("create", 0, "req-1"), "start_time": recent(60)}]
            },
            # Deleted since it was listed: nothing to say.
            "/v2.1/servers/s-2/os-instance-actions": ApiFailure("compute", 404, "Not found."),
            "/v2.1/servers/s-3/os-instance-actions": {"instanceActions": [failing]},
            "/v2.1/servers/s-3/os-instance-actions/req-9": {
                "instanceAction": {
                    **failing,
                    "events": [{"event": "compute_spawning", "result": "Error"}],
                }
            },
            "/v2.1/servers/s-4/os-instance-actions": ApiFailure(
                "compute", 503, "Compute is restarting.", "req-x"
            ),
        },
        {VOLUMES: ApiFailure("volume", 500, "Database gone.", "req-v")},
    )
    found = await recent_activity(apis, "p-1")
    assert [(e["target"]["name"], e["what"], e["result"]) for e in found["entries"]] == [
        ("broken", "create", "error"),
        ("fine", "create", "finished"),
    ]
    # The quota's usual fix follows the fault's message.
    assert found["entries"][0]["error"].startswith("Failed at spawning: Disk quota exceeded.")
    assert all("failed_action" not in e for e in found["entries"])
    assert sorted(found["problems"]) == [
        "The actions of flaky could not be read: Compute is restarting. (request req-x)",
        "The volumes could not be read: Database gone. (request req-v)",
    ]


async def test_a_refused_token_is_raised_for_the_page_to_end_the_session():
    apis = FakeApis(
        {SERVERS: ApiFailure("compute", 401, "The token is not valid.")}, {VOLUMES: {"volumes": []}}
    )
    with pytest.raises(ApiFailure) as raised:
        await recent_activity(apis, "p-1")
    assert raised.value.status == 401


async def test_the_servers_list_failing_leaves_an_empty_section_with_the_reason():
    apis = FakeApis({SERVERS: ApiFailure("compute", 500, "Boom.")}, {VOLUMES: {"volumes": []}})
    found = await recent_activity(apis, "p-1")
    assert found["entries"] == []
    assert found["problems"] == ["The servers could not be read: Boom."]
    assert apis.compute.asked == [SERVERS]
