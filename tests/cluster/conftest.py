"""A REAL local Ray cluster for the --ray tests: `ray start --head` on 127.0.0.1 with 2 CPUs (so two
single-CPU workers), started before the first test of tests/cluster and stopped after its last. Skipped where Ray is not installed (`make test` installs
simgen[ray])."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="package")  # stopped once tests/cluster is done, not kept running beside the rest of the suite
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("ray")
    exe = Path(sys.executable).with_name("ray")
    port = free_port()
    temp = Path("/tmp") / f"simgen-ray-{os.getpid()}"  # short: Ray's unix sockets live under it
    # token auth off on both ends (the head and every driver this session starts): a token file another Ray left
    # in ~/.ray must not decide whether the test cluster lets its drivers in
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(exe), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([str(exe), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
