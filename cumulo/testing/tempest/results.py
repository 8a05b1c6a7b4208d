"""Tempest's results: the subunit stream of a run turned into per-test records, the
per-service failure lists, and docs/conformance.md."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("identity", "compute", "image", "network", "volume", "object_storage")

# Runs in the Tempest venv (subunit and testtools are Tempest's dependencies): reads a
# subunit v2 stream on stdin, prints one JSON record per test.
_PARSE = r"""
import json, sys
import subunit, testtools
out = []
def on_test(test):
    details = {k: v.as_text() for k, v in test["details"].items()
               if v.content_type.type == "text"}
    out.append({"id": test["id"], "status": test["status"],
                "reason": details.get("reason", ""),
                "traceback": details.get("traceback", "")})
case = testtools.StreamToDict(on_test)
case.startTestRun()
subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(case)
case.stopTestRun()
json.dump(out, sys.stdout)
"""


@dataclass
class Result:
    id: str
    status: str  # success, fail, skip (and xfail/uxsuccess, counted as they are)
    reason: str
    run: str = "main"  # the pass that ran it

    @property
    def name(self) -> str:
        return self.id.split("[")[0]

    @property
    def service(self) -> str:
        parts = self.name.split(".")
        return parts[2] if len(parts) > 2 and parts[0] == "tempest" else "setup"

    @property
    def test_class(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name


# tempest.log's summary line of each request: "Request (Class:test): 404 GET http://h:p/path"
_REQUEST = re.compile(r"Request \((\w+):(\w+)\): ([45]\d\d) (\w+) https?://[^/ ]+(\S*)")


def failed_requests(tempest_log: Path) -> dict[tuple[str, str], str]:
    """(class, test) -> its last request answered 4xx/5xx, e.g. `404 GET /v2.1/os-hosts`."""
    last: dict[tuple[str, str], str] = {}
    if tempest_log.exists():
        with tempest_log.open(errors="replace") as f:
            for line in f:
                m = _REQUEST.search(line)
                if m:
                    last[(m[1], m[2])] = f"{m[3]} {m[4]} {m[5].split('?')[0]}"
    return last


def parse(tempest_python: Path, stream: bytes, tempest_log: Path | None = None) -> list[Result]:
    proc = subprocess.run(
        [str(tempest_python), "-c", _PARSE], input=stream, capture_output=True, check=True
    )
    results = []
    for rec in json.loads(proc.stdout):
        if rec["status"] in ("exists", "inprogress"):
            continue
        reason = rec["reason"] if rec["status"] == "skip" else one_line(rec["traceback"])
        results.append(Result(rec["id"], rec["status"], reason))
    # A failing class setup is reported as "setUpClass (tempest.api....Class)".
    for r in results:
        m = re.match(r"(setUpClass|tearDownClass) \((.+)\)", r.id)
        if m:
            r.id = f"{m.group(2)}.{m.group(1)}"
    requests = failed_requests(tempest_log) if tempest_log else {}
    for r in results:
        cls, _, test = r.name.rpartition(".")
        request = requests.get((cls.rpartition(".")[2], test))
        if r.status == "fail" and request:
            r.reason = f"[{request}] {r.reason}"
    return sorted(results, key=lambda r: r.id)


def one_line(traceback: str) -> str:
    """The traceback's own message: the last exception line, shortened."""
    lines = [ln.strip() for ln in traceback.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    # Tempest's exceptions end with "Details: {...}" on their own line: keep both.
    exc = next(
        (
            i
            for i in range(len(lines) - 1, -1, -1)
            if re.match(
                r"^[\w.]+(Error|Exception|"
                r"Failure|Conflict|NotFound|Forbidden|BadRequest|Unauthorized|Timeout|"
                r"ServerFault|UnexpectedResponseCode|InvalidHTTPResponseBody|"
                r"UnexpectedContentType|InvalidConfiguration|[A-Z]\w+):",
                lines[i],
            )
        ),
        len(lines) - 1,
    )
    text = " ".join(lines[exc : exc + 3])
    return text[:400]


def counts(results: list[Result]) -> Counter:
    return Counter(r.status for r in results)


def write_failures(results: list[Result], directory: Path) -> None:
    """One file per service: `test id — reason` per failed test."""
    directory.mkdir(parents=True, exist_ok=True)
    by_service: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.status == "fail":
            by_service[r.service].append(r)
    for service in SERVICES:
        lines = [f"{r.id} — {r.reason}" for r in by_service.get(service, [])]
        (directory / f"{service}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def write_json(results: list[Result], path: Path) -> None:
    path.write_text(json.dumps([r.__dict__ for r in results], indent=1))


ADMIN_CREDENTIALS = [
    "## How Tempest is run (admin credentials)",
    "",
    "cumulo's default policy makes cloud admins of the `admin` role on the `admin` project "
    "(Keystone's `admin_project_name`) or on the system, not of any project's admin. "
    "Tempest's dynamic credentials make a test's admin by giving it the admin role on a "
    "new project, so the main pass runs the way a hardened cloud is tested: "
    "`[auth] use_dynamic_credentials = false` with a pre-provisioned `test_accounts_file`, "
    "made by the harness on the fresh cloud: admins (admin role on the `admin` project), "
    "system-scoped admin, member and reader users, and ten projects each with a member "
    "(owning a network, subnet and router to `public`), a manager and a reader; the default "
    "policy is unchanged.",
    "",
    "Tempest 47 ignores that configuration for the classes that set "
    "`force_tenant_isolation = True` (all of `identity.admin.v3`, compute admin "
    "`test_quotas`, `test_quotas_negative`, `test_auto_allocate_network`, volume "
    "`test_volume_absolute_limits`): they always get dynamic credentials. Those classes "
    "(marked † below) run in a second pass on a second fresh cloud whose `policy.yaml` "
    "says `cloud_admin: role:admin` (upstream OpenStack's default, where any admin is a "
    "cloud admin); their results say what the APIs do, not what the default policy allows.",
]


def render_markdown(results: list[Result], meta: dict[str, str]) -> str:
    out = ["# Conformance: Tempest against cumulo", ""]
    out.append(
        "Written by `make conformance` (cumulo/testing/tempest): a fresh cloud, Tempest from "
        "PyPI in its own venv. Do not edit by hand; run it again."
    )
    out += ["", *ADMIN_CREDENTIALS, ""]
    for key, value in meta.items():
        out.append(f"- {key}: {value}")
    total = counts(results)
    out.append(
        f"- total: {total['success']} passed, {total['fail']} failed, {total['skip']} skipped"
    )
    out += [
        "",
        "## Per service",
        "",
        "| service | passed | failed | skipped |",
        "|---|---|---|---|",
    ]
    by_service: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_service[r.service].append(r)
    for service, rs in sorted(by_service.items()):
        c = counts(rs)
        out.append(f"| {service} | {c['success']} | {c['fail']} | {c['skip']} |")
    out += ["", "## Per test class", ""]
    for service, rs in sorted(by_service.items()):
        out += [f"### {service}", "", "| class | passed | failed | skipped |", "|---|---|---|---|"]
        by_class: dict[str, list[Result]] = defaultdict(list)
        for r in rs:
            by_class[r.test_class].append(r)
        for cls, crs in sorted(by_class.items()):
            c = counts(crs)
            short = cls.removeprefix(f"tempest.api.{service}.")
            if any(r.run != "main" for r in crs):
                short += " †"
            out.append(f"| {short} | {c['success']} | {c['fail']} | {c['skip']} |")
        out.append("")
    out += ["## Skips and their reasons", ""]
    skips = [r for r in results if r.status == "skip"]
    for r in skips:
        out.append(f"- `{r.id}`: {r.reason or '(no reason given)'}")
    out += ["", "## Failures", ""]
    for r in (r for r in results if r.status == "fail"):
        out.append(f"- `{r.id}`: {r.reason.replace('|', '/')}")
    return "\n".join(out) + "\n"
