"""The HTML report: self-contained, every plot embedded as inline SVG, corpus text escaped; and,
where Debian's chromium exists, a real headless render."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import polars as pl
import pytest

from simgen.realism import RealismConfig, compare

FAST = RealismConfig(use_embeddings=False, discriminators=("tfidf", "style"), n_boot=200, n_perm=200, mauve_seeds=2)
CHROMIUM = Path("/usr/bin/chromium")


class Collector(HTMLParser):
    """Tags, plot ids, external references and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.plots: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []
        self.svg_shapes = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "svg":
            assert a.get("class") == "plot" and a.get("data-plot")
            self.plots.append(a["data-plot"])
        if tag in ("rect", "circle", "line"):
            self.svg_shapes += 1
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(a[key])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, make_corpus) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("html")
    syn = make_corpus("llm", 20, seed=1, intents=True)
    # corpus text that would break an unescaped page
    syn = syn.with_columns(
        pl.when(pl.col("role") == "user").then(pl.lit("<script>alert('x')</script> ") + pl.col("text"))
        .otherwise(pl.col("text")).alias("text")
    )
    compare(syn, make_corpus("human", 20, seed=2), out, config=FAST)
    return out / "report.html"


def test_html_embeds_every_plot(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    p = Collector()
    p.feed(html)
    assert p.plots[0] == "auc"
    assert {f"attribute-{a}" for a in ("intent", "sentiment", "topic", "length", "dialogue_length", "style")} <= set(p.plots)
    assert {"hist-user_turn_words", "hist-turns_per_dialogue"} <= set(p.plots)
    assert p.svg_shapes > 50
    # every plot is well-formed SVG (an unquoted attribute would swallow the elements after it)
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(svgs) == len(p.plots)
    for svg in svgs:
        root = ElementTree.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and len(root) > 0
    assert p.external == []  # self-contained: no scripts, images or stylesheets fetched
    assert "script" not in p.tags
    text = " ".join(p.text)
    for needle in ("Ensemble discriminator AUC", "What gives synthetic text away", "nearest reference user turn",
                   "Most synthetic-looking examples", "permutation p (adjusted)"):
        assert needle in text
    assert "<script>alert" in text  # shown as text, escaped in the source
    assert "&lt;script&gt;" in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_chromium_renders_a_screenshot(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if shutil.which("python3"):
        import struct

        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (1200, 2400)
