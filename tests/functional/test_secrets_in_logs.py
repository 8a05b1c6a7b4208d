"""No secret in any log line at any level cumulo logs at: a user's password, tokens, an EC2 secret,
an application credential's secret, a server's admin password and its user data are
used through the real clients while every logger of the process records at DEBUG,
and none of them appears in what was logged (message, arguments, exception text)."""

from __future__ import annotations

import base64
import logging
import time
import uuid

import pytest

from cumulo.common.logs import QUIET_LIBRARIES, quiet_libraries
from tests.cloudrunner import CloudRunner

# The test's own clients, which run in the cloud's process (openstacksdk logs whole
# request bodies at DEBUG): not the cloud's logs.
CLIENT_LIBRARIES = {"keystoneauth", "openstack", "urllib3", "stevedore", "requests"}


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in CLIENT_LIBRARIES:
            return
        self.lines.append(self.format(record))  # message, its arguments and any traceback
        self.lines.append(repr(record.__dict__))


@pytest.fixture
def every_log_line():
    """Every log line of the process (the in-process cloud's included) with cumulo's
    logging at DEBUG, as `setup_logging(logging.DEBUG)` makes it."""
    root = logging.getLogger()
    recorder = Recorder()
    levels = {name: logging.getLogger(name).level for name in (None, *QUIET_LIBRARIES)}
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    quiet_libraries(logging.DEBUG)
    try:
        yield recorder.lines
    finally:
        root.removeHandler(recorder)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_no_password_token_or_secret_appears_in_any_log_line(cloud: CloudRunner, every_log_line):
    name = f"secret-{uuid.uuid4().hex[:8]}"
    password = f"Pw-{uuid.uuid4().hex}"
    cloud.openstack("user", "create", "--password", password, "--project", "demo", name)
    cloud.openstack("role", "add", "--user", name, "--project", "demo", "member")
    as_user = [
        "--os-username", name, "--os-password", password, "--os-project-name", "demo",
    ]  # fmt: skip
    token = cloud.openstack(*as_user, "token", "issue", "-f", "json")["id"]
    ec2 = cloud.openstack(*as_user, "ec2", "credentials", "create", "-f", "json")
    app = cloud.openstack(
        *as_user, "application", "credential", "create", f"{name}-app", "-f", "json"
    )
    # Each secret used once more: logging in with them, not only creating them.
    with cloud.http() as http:
        app_login = {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": app["ID"], "secret": app["Secret"]},
            }
        }
        assert http.post("/v3/auth/tokens", json={"auth": app_login}).status_code == 201
        check = {"X-Auth-Token": token, "X-Subject-Token": token}
        assert http.get("/v3/auth/tokens", headers=check).status_code == 200
    # A wrong password is logged as a failure, without the password tried.
    wrong = f"Wrong-{uuid.uuid4().hex}"
    bad = [*as_user[:2], "--os-password", wrong, *as_user[4:]]
    assert cloud.openstack(*bad, "token", "issue", check=False).returncode != 0

    conn = cloud.sdk("cumulo-demo")
    admin_pass = f"Root-{uuid.uuid4().hex}"
    user_data = f"#!/bin/sh\necho user-data-{uuid.uuid4().hex}\n"
    image = cloud.sdk().image.create_image(
        name=name, data=b"\0" * 65536, disk_format="raw", container_format="bare",
        visibility="public",
    )  # fmt: skip
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    server = conn.compute.create_server(
        name=name,
        image_id=image.id,
        flavor_id=flavor.id,
        networks="none",
        admin_password=admin_pass,
        user_data=base64.b64encode(user_data.encode()).decode(),
    )
    conn.compute.wait_for_server(server, wait=60)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=60)
    time.sleep(0.5)  # what the cloud logs after answering

    secrets = {
        "password": password,
        "wrong password": wrong,
        "token": token,
        "EC2 secret": ec2["secret"],
        "application credential secret": app["Secret"],
        "admin password": admin_pass,
        "user data": user_data.strip().split()[-1],
        "user data (base64)": base64.b64encode(user_data.encode()).decode(),
        "admin's password": cloud.config.identity.admin_password,
        "service password": cloud.config.identity.service_password,
    }
    text = "\n".join(every_log_line)
    assert len(every_log_line) > 100, "the cloud logged nothing: the test would prove nothing"
    leaked = {what: secret for what, secret in secrets.items() if secret in text}
    assert not leaked, [line for line in every_log_line if any(s in line for s in leaked.values())][
        :5
    ]
