"""Enrolment tokens: kept as hashes, single-use by default, expiring; the config a new host
is given leaves out the controller's own host settings."""

from __future__ import annotations

import json
import time

from cumulo.common.config import CumuloConfig
from cumulo.operations import enrolment


def test_a_token_is_stored_hashed_used_once_and_expires(tmp_path):
    token = enrolment.create_token(tmp_path)
    stored = (tmp_path / enrolment.TOKENS_FILE).read_text()
    assert token not in stored and len(json.loads(stored)) == 1
    assert (tmp_path / enrolment.TOKENS_FILE).stat().st_mode & 0o777 == 0o600
    assert enrolment.redeem(tmp_path, token)
    assert not enrolment.redeem(tmp_path, token)  # used up
    assert not enrolment.redeem(tmp_path, "not-a-token")

    twice = enrolment.create_token(tmp_path, uses=2)
    assert enrolment.redeem(tmp_path, twice) and enrolment.redeem(tmp_path, twice)
    assert not enrolment.redeem(tmp_path, twice)

    brief = enrolment.create_token(tmp_path, ttl=0.05)
    time.sleep(0.1)
    assert not enrolment.redeem(tmp_path, brief)
    assert json.loads((tmp_path / enrolment.TOKENS_FILE).read_text()) == {}  # pruned


def test_the_host_config_leaves_out_the_controllers_own_settings(tmp_path):
    config = CumuloConfig()
    config.compute.host = "controller"
    config.network.agent_host = "controller"
    config.network.tunnel_local_ip, config.network.tunnel_device = "192.0.2.1/24", "eth1"
    config.messaging.transport_url = "rabbit://cumulo:secret@10.0.0.10:5672/"
    given = enrolment.host_config(config, tmp_path)
    assert given["ca"] is None
    text = given["config"]
    assert "rabbit://cumulo:secret@10.0.0.10:5672/" in text
    assert "controller" not in text and "192.0.2.1" not in text and "eth1" not in text
