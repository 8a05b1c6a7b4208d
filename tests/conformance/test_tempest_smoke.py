"""OpenStack's own Tempest smoke tests pass against a fresh cumulo cloud.

The same harness as `make conformance` (cumulo/testing/tempest), with `--smoke`: Tempest
from PyPI in its own venv (.tempest-venv, or $CUMULO_TEMPEST_VENV), never a dependency of
cumulo. Without PyPI the test is skipped here and fails under CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cumulo.testing.tempest.__main__ import REPO, tempest_venv
from tests.conftest import skip_or_fail


def test_tempest_smoke_tests_pass(tmp_path: Path):
    venv = Path(os.environ.get("CUMULO_TEMPEST_VENV", REPO / ".tempest-venv"))
    try:
        tempest_venv(venv)
    except subprocess.CalledProcessError as exc:
        skip_or_fail(f"could not install Tempest from PyPI into {venv}: {exc}")
    run_dir = tmp_path / "tempest"
    proc = subprocess.run(
        [sys.executable, "-m", "cumulo.testing.tempest", "--smoke", "--tempest-venv",
         str(venv), "--run-dir", str(run_dir)],
        capture_output=True, text=True, cwd=REPO, timeout=1800,
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    failed = [f"{r['id']}: {r['reason']}" for r in results if r["status"] == "fail"]
    passed = [r for r in results if r["status"] == "success"]
    assert not failed, "Tempest smoke failures:\n" + "\n".join(failed)
    assert passed, proc.stdout + proc.stderr
