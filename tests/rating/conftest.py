"""Fixtures for `simgen rate`: a real run on the tiny random Llama, IARD's real dialogues from ../shared,
and the rating server on a free port (uvicorn in a thread, or `simgen rate` as its own process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from simgen.config import SamplingConfig
from tests.conftest import free_port

N_RUN = 12  # dialogues in the run: enough for --n 20 (10 simulated)
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SIMGEN_TEST_ARTIFACTS", REPO / "outputs" / "test-artifacts"))


@pytest.fixture(scope="session")
def rate_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 12-dialogue run of the tiny model (trim off: its lines seldom end a sentence)."""
    import simgen

    run = simgen.generate(scenario="movie-recommendation", n=N_RUN, seed=5, max_turns=3, batch_size=4, dtype="float32",
                          model=str(tiny_model_dir), out=tmp_path_factory.mktemp("rate-runs") / "run", progress=False,
                          user=SamplingConfig(max_new_tokens=8, trim=False),
                          assistant_sampling=SamplingConfig(max_new_tokens=10, trim=False))
    return run.path


@pytest.fixture
def run_copy(rate_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run, so a test's rating folder stays its own."""
    out = tmp_path / "run"
    shutil.copytree(rate_run, out)
    return out


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def post(url: str, form: dict[str, Any]) -> tuple[int, str]:
    from urllib.parse import urlencode

    req = urllib.request.Request(url, data=urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # follows the 303 to the next page
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


class ThreadServer:
    """The rating app under a real uvicorn server in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "the rating server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ProcessServer:
    """`simgen rate RUN ...` as its own process, as a user starts it; `kill()` is a SIGKILL."""

    def __init__(self, run: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        exe = Path(sys.executable).with_name("simgen")
        self.argv = [str(exe), "rate", str(run), "--port", str(self.port), *args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> ProcessServer:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while True:
            assert self.proc.poll() is None, f"simgen rate exited: {self.proc.stdout.read()}"
            try:
                status, body = get(self.url + "status.json")
                if status == 200:
                    self.status = json.loads(body)
                    return self
            except OSError:
                pass
            assert time.time() < deadline, "simgen rate did not start in 120 s"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
