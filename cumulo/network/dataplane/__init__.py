"""The Network data plane: what the agent on each host builds from the desired state.

The API writes the database and casts `sync` to `network.<host>`; the agent asks the
server for the host's desired state (`desired_state` on topic `network`) and hands it
to its driver, which converges the host on it. A restarted agent does the same, so
resync after a restart is the ordinary path, not a special one.
"""
