"""The `openstack` CLI, run as a new process per command but without paying for its
imports each time: a server process imports python-openstackclient once (a second of
CPU per command otherwise: a thousand commands in `make test`), and forks a child per
command that runs the CLI's own `main()` with the command's argv, environment and
output files, exactly as `openstack …` would from the shell. Nothing of the CLI is
replaced; only Python's import work is shared, and `--wait` polls more often
(tests/client_polls.py).

Protocol on the server's stdin/stdout: one JSON line per command
{"argv", "env", "cwd", "stdout", "stderr"} (paths the child writes to), answered by one JSON line
{"pid"} when the child is forked and {"returncode"} when it has exited.
"""

from __future__ import annotations

import json
import os
import sys


def _child(request: dict) -> None:
    """In the forked child: become `openstack <argv>` and exit with its status."""
    code = 1
    try:
        os.setsid()  # its own group: a timeout kills the command and whatever it started
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, fd)
            os.close(out)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = ["openstack", *request["argv"]]
        from openstackclient import shell

        code = shell.main(request["argv"]) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as the CLI would: a traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - exiting regardless
                pass
        os._exit(code)


def serve() -> None:
    # What every command imports, once (python-openstackclient's shell and plugins).
    from openstackclient import shell  # noqa: F401
    from openstackclient.common import clientmanager  # noqa: F401

    from tests import client_polls

    client_polls.shorten_cli()  # `--wait` polls every 0.5 s, not 5 s

    answers = sys.stdout
    sys.stdout = sys.stderr  # nothing but the protocol on the pipe
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), file=answers, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=answers,
              flush=True)  # fmt: skip


if __name__ == "__main__":
    serve()
