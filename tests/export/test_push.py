"""`--push`: the upload through huggingface_hub's real HfApi, with only the network layer replaced.

The Hub cannot be reached from here (and tests never touch the network), so these tests install an
`httpx2.MockTransport` in huggingface_hub's own client factory (`set_client_factory`): everything
above the socket runs for real (HfApi.create_repo, the card's YAML check, preupload, the commit
payload, the offline-mode hook), and the fake Hub answers as the real one does for a small folder
(every file uploaded as a regular blob). The tests assert what HfApi would send: a private dataset
repo, every file of the folder with its bytes, the token only in the Authorization header and
never in what simgen prints or logs.
"""

from __future__ import annotations

import base64
import json
import logging

import httpx2
import pytest
from click.testing import CliRunner

from simgen.cli import cli
from simgen.export.hub import HubError, export_hub, push

TOKEN = "hf_testTOKEN_0123456789abcdef"


class FakeHub:
    """Answers the Hub API calls of an upload; records every request."""

    def __init__(self, fail: Exception | None = None, status: int | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.fail, self.status = fail, status

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        path = request.url.path
        if self.status is not None:
            return httpx2.Response(self.status, json={"error": "Invalid credentials in Authorization header"})
        if path == "/api/repos/create":
            body = json.loads(request.content)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/datasets/{body['organization']}/{body['name']}"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/datasets/x/y/commit/" + "a" * 40,
                                              "commitOid": "a" * 40, "success": True})
        return httpx2.Response(404, json={"error": "not found"})

    def to(self, path_part: str) -> list[httpx2.Request]:
        return [r for r in self.requests if path_part in r.url.path]


@pytest.fixture
def fake_hub(monkeypatch):
    """Install a FakeHub as huggingface_hub's transport; online mode; no token in the environment."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub = FakeHub()

    def factory() -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]}, transport=httpx2.MockTransport(lambda r: hub(r)),
                             follow_redirects=True)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/hf-home/token")  # no login cache either
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", "/nonexistent/hf-home/stored_tokens")
    _http.set_client_factory(factory)
    yield hub
    _http.set_client_factory(_http.default_client_factory)


@pytest.fixture(scope="module")
def folder(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("push") / "ds"
    export_hub(run, out)
    return out


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_push_sends_a_private_dataset_repo_with_every_file(fake_hub, run, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli, ["export", "hub", str(run.path), "--to", str(out), "--repo-id", "my-org/movie-dialogues", "--push"])
    assert result.exit_code == 0, result.output
    assert "pushed to https://huggingface.co/datasets/my-org/movie-dialogues (private)" in result.output

    [create] = fake_hub.to("/api/repos/create")
    assert json.loads(create.content) == {"name": "movie-dialogues", "organization": "my-org", "visibility": "private", "type": "dataset"}
    [commit] = fake_hub.to("/api/datasets/my-org/movie-dialogues/commit/main")
    sent = {}
    for line in commit.content.decode().splitlines():
        item = json.loads(line)
        if item["key"] == "file":
            sent[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
    assert sent == snapshot(out)  # every file, byte for byte, under its path in the folder
    for r in fake_hub.requests:
        if r.url.path.startswith("/api/repos") or "/datasets/" in r.url.path:
            assert r.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in result.output and TOKEN not in caplog.text


def test_public_flag_and_existing_repo(fake_hub, folder):
    url = push(folder, "my-org/open-data", private=False, token=TOKEN)
    assert url == "https://huggingface.co/datasets/my-org/open-data"
    assert json.loads(fake_hub.to("/api/repos/create")[0].content)["visibility"] == "public"


def test_no_token_is_a_clear_error_and_the_folder_stays(fake_hub, folder):
    before = snapshot(folder)
    with pytest.raises(HubError, match=r"no Hugging Face token. Set HF_TOKEN or run `hf auth login`.*intact"):
        push(folder, "my-org/movie-dialogues")
    assert fake_hub.requests == [] and snapshot(folder) == before


def test_offline_mode_is_a_clear_error_before_any_request(fake_hub, folder, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\).*intact"):
        push(folder, "my-org/movie-dialogues", token=TOKEN)
    assert fake_hub.requests == []


def test_unreachable_hub_is_a_clear_error_without_the_token(fake_hub, folder):
    before = snapshot(folder)
    fake_hub.fail = httpx2.ConnectError(f"[Errno -3] name resolution failed (Authorization: Bearer {TOKEN})")
    with pytest.raises(HubError) as e:
        push(folder, "my-org/movie-dialogues", token=TOKEN)
    assert "the Hub is unreachable (ConnectError" in str(e.value) and "intact" in str(e.value)
    assert TOKEN not in str(e.value) and snapshot(folder) == before


def test_rejected_token_names_the_status(fake_hub, folder):
    fake_hub.status = 401
    with pytest.raises(HubError, match="HTTP 401, the token is invalid or expired") as e:
        push(folder, "my-org/movie-dialogues", token=TOKEN)
    assert TOKEN not in str(e.value)


def test_embedding_text_leaves_the_hub_reachable_in_the_same_process(tmp_path):
    """The realism embedder once set HF_HUB_OFFLINE=1 for the whole process, which froze huggingface_hub
    offline, so a push after a realism check failed. In a fresh interpreter whose environment has no
    offline flags: embed (loads the embedded MiniLM from disk), then the push must get as far as the token."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env["HF_HOME"] = str(tmp_path / "hf")  # no login cache: the push must stop at the missing token
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "README.md").write_text("---\nlicense: other\n---\n")
    code = (
        "import os\n"
        "from simgen.realism.embed import embed\n"
        "assert embed(['a line to embed'], use_cache=False).shape == (1, 384)\n"
        "from huggingface_hub import constants\n"
        "assert not constants.is_offline_mode() and 'HF_HUB_OFFLINE' not in os.environ\n"
        "from simgen.export.hub import HubError, push\n"
        f"try:\n    push({str(tmp_path / 'ds')!r}, 'my-org/x')\n"
        "except HubError as e:\n    print('HubError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no Hugging Face token" in out.stdout and "offline mode" not in out.stdout
