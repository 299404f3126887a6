"""The rating page in a real browser: Debian's Chromium driven by Playwright (its own browser download is
not reachable here, so `executable_path` points at /usr/bin/chromium; `make test` installs it).

A rater answers 10 dialogues with the keyboard only, the server is SIGKILLed, `simgen rate` starts again,
and the rater resumes at 11 / 20; the answers file holds exactly 10 rows before and 20 after. Screenshots
go to outputs/test-artifacts/ (or $SIMGEN_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simgen.rating.items import read_items

from .conftest import ARTIFACTS, ProcessServer

CHROMIUM = Path("/usr/bin/chromium")
N = 20
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (`make test` installs it)")


def rows(run: Path) -> list[dict]:
    path = run / "rating" / "answers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def answer(page, position: int) -> None:
    """One answer by keys: Left or Right, sometimes a note (N, text, Esc), then 1-4, which saves and moves on."""
    page.keyboard.press("ArrowRight" if position % 3 else "ArrowLeft")
    if position == 2:
        page.keyboard.press("n")
        page.keyboard.type("said bye twice")
        page.keyboard.press("Escape")
    with page.expect_navigation():
        page.keyboard.press(str(1 + position % 4))


def test_a_rater_answers_by_keyboard_survives_a_killed_server_and_resumes(run_copy, iard_dir):
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    args = ("-r", str(iard_dir), "--n", str(N), "--raters", "alice", "-d", "tfidf,style", "--n-boot", "200")
    server = ProcessServer(run_copy, *args).start()
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(server.url)
            with page.expect_navigation():
                page.click("text=alice")
            page.keyboard.press("1")  # confidence before a choice: nothing is saved, the choice box flashes
            assert page.inner_text("#progress") == f"1 / {N}"
            for position in range(10):
                assert page.inner_text("#progress") == f"{position + 1} / {N}"
                answer(page, position)
            page.screenshot(path=str(ARTIFACTS / "rate-page.png"), full_page=True)
            assert page.inner_text("#progress") == f"11 / {N}"
            server.kill()
            assert len(rows(run_copy)) == 10

            server = ProcessServer(run_copy, "--raters", "alice", "-d", "tfidf,style", "--n-boot", "200")
            server.start()  # no --reference: the saved rating goes on
            page.goto(server.url + "rate/alice")
            assert page.inner_text("#progress") == f"11 / {N}"
            for position in range(10, N):
                answer(page, position)
            assert page.url.endswith("/results/alice") and "Thank you, alice" in page.inner_text("h1")
            page.screenshot(path=str(ARTIFACTS / "rate-results.png"), full_page=True)
            browser.close()
    finally:
        server.kill()
    got = rows(run_copy)
    assert len(got) == N and [r["position"] for r in got] == list(range(N))
    items = read_items(run_copy)
    order = items.order("alice")
    assert [r["item"] for r in got] == [items.items[k].item for k in order]
    assert [r["choice"] for r in got] == ["simulated" if p % 3 else "real" for p in range(N)]
    assert [r["confidence"] for r in got] == [1 + p % 4 for p in range(N)]
    assert got[2]["note"] == "said bye twice" and all(r["note"] == "" for i, r in enumerate(got) if i != 2)
    assert all(r["seconds"] is not None and r["seconds"] >= 0 for r in got)  # the script timed each page
    shot = (ARTIFACTS / "rate-page.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
