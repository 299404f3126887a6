"""`simgen rate` without a browser: the item set, blindness of the served pages, answers that survive
restarts, bad input, the report with simgen's discriminators on the same items, and export hub."""

from __future__ import annotations

import json
import re
import shutil
import socket
from html import unescape

import polars as pl
import pytest
from click.testing import CliRunner

from simgen.cli import cli
from simgen.errors import DataError, RunError
from simgen.rating.answers import Answers, read_answers
from simgen.rating.items import FOLDER, ITEMS, prepare_items
from simgen.rating.server import make_app

from tests.conftest import free_port

from .conftest import N_RUN, ThreadServer, get, post

N = 20


def items_of(run, iard_dir, **kw):
    return prepare_items(run, reference=iard_dir, n=N, **kw)


def test_the_item_set_is_balanced_seeded_cut_alike_and_saved_once(run_copy, iard_dir):
    items = items_of(run_copy, iard_dir)
    assert [i.source for i in items.items].count("synthetic") == [i.source for i in items.items].count("real") == N // 2
    assert items.settings["reference_split"] == "test"
    from simgen.corpora import split_of

    assert all(split_of(i.dialogue_id) == "test" for i in items.items if i.source == "real")  # held-out real dialogues
    for it in items.items:  # every item: at most max_user_turns user lines, whitespace collapsed
        assert sum(r == "user" for r, _ in it.turns) <= items.max_user_turns
        assert all(t == " ".join(t.split()) for _, t in it.turns)
    real = [i for i in items.items if i.source == "real"]
    assert any(i.cut for i in real) == any(sum(r == "user" for r, _ in i.turns) == items.max_user_turns for i in real)
    doc = (run_copy / FOLDER / ITEMS).read_bytes()
    again = items_of(run_copy, iard_dir)  # same settings: the saved set, untouched
    assert again.items_id == items.items_id and (run_copy / FOLDER / ITEMS).read_bytes() == doc
    assert prepare_items(run_copy).items_id == items.items_id  # a restart with no flags reuses it
    other = shutil.copytree(run_copy, run_copy.parent / "other")
    shutil.rmtree(other / FOLDER)
    assert items_of(other, iard_dir).items_id == items.items_id  # seeded: the same run gives the same set
    orders = {r: items.order(r) for r in ("alice", "bob")}
    assert sorted(orders["alice"]) == list(range(N)) and orders["alice"] != orders["bob"] and items.order("alice") == orders["alice"]


def test_the_cut_shows_whole_turns_and_the_reply_to_the_last_user_turn():
    from simgen.rating.items import cut_dialogue

    rows = [("assistant", "hi"), ("user", "a  b"), ("assistant", "c"), ("user", "d\ne"), ("assistant", "f"), ("user", "g")]
    assert cut_dialogue(rows, 2) == ((("assistant", "hi"), ("user", "a b"), ("assistant", "c"), ("user", "d e"), ("assistant", "f")), True)
    assert cut_dialogue(rows, 3) == (tuple((r, " ".join(t.split())) for r, t in rows), False)


DIALOGUE = re.compile(r'<ol class="dialogue">(.*?)</ol>', re.S)


def masked(html: str) -> str:
    html = DIALOGUE.sub('<ol class="dialogue">TEXT</ol>', html)
    html = re.sub(r'id="progress">\d+ / \d+<', 'id="progress">K / N<', html)
    return re.sub(r'name="position" value="\d+"', 'name="position" value="K"', html)


def test_pages_of_real_and_simulated_items_differ_only_in_the_dialogue(run_copy, iard_dir):
    """Every item page, served over HTTP, is the same page once the dialogue text and the count are masked."""
    items = items_of(run_copy, iard_dir)
    answers = Answers(items)
    pages: dict[str, set[str]] = {"synthetic": set(), "real": set()}
    with ThreadServer(make_app(items, answers)) as srv:
        for position in range(N):
            status, html = get(srv.url + "rate/zed")
            assert status == 200 and f"{position + 1} / {N}" in html
            item = items.items[items.order("zed")[position]]
            body = DIALOGUE.search(html).group(1)
            # inside the dialogue: only the role and the escaped text of each line, in order
            shown = re.findall(r'<li class="turn (user|assistant)"><span class="role">(\1)</span><p>(.*?)</p></li>', body, re.S)
            assert [(r, unescape(t)) for r, _, t in shown] == list(item.turns)
            assert all("<" not in t for _, _, t in shown)  # corpus text is escaped, never markup
            assert re.sub(r'<li class="turn (user|assistant)"><span class="role">\1</span><p>.*?</p></li>', "", body, flags=re.S).strip() == ""
            page = masked(html)
            assert item.dialogue_id not in page and item.item not in page  # no ids outside the dialogue text
            pages[item.source].add(page)
            post(srv.url + "rate/zed", {"position": position, "choice": "real", "confidence": 2})
        status, html = get(srv.url + "rate/zed")  # all done: the results view
        assert status == 200 and "Thank you, zed" in html
    assert len(pages["synthetic"]) == len(pages["real"]) == 1 and pages["synthetic"] == pages["real"]


def test_answers_are_appended_once_per_position_and_survive_a_torn_last_line(run_copy, iard_dir, capsys):
    items = items_of(run_copy, iard_dir)
    answers = Answers(items)
    with ThreadServer(make_app(items, answers, raters=("amy",))) as srv:
        assert post(srv.url + "rate/amy", {"position": 0, "choice": "simulated", "confidence": 3, "note": "too polite", "ms": "2500"})[0] == 200
        assert post(srv.url + "rate/amy", {"position": 0, "choice": "real", "confidence": 1})[0] == 200  # a resubmit: ignored
        status, html = post(srv.url + "rate/amy", {"position": 1, "choice": "maybe", "confidence": 9})
        assert status == 400 and "Choose real person or simulated" in html and f"2 / {N}" in html
        assert get(srv.url + "rate/bob")[0] == 404  # not one of --raters
        assert get(srv.url + "rate/..%2Fx")[0] in (400, 404)
        assert json.loads(get(srv.url + "status.json")[1])["answered"] == {"amy": 1}
    rows = read_answers(items)
    assert len(rows) == 1 and rows[0]["note"] == "too polite" and rows[0]["seconds"] == 2.5
    assert rows[0]["item"] == items.items[items.order("amy")[0]].item
    path = items.answers_path
    path.write_bytes(path.read_bytes() + b'{"items_id": "' + items.items_id.encode() + b'", "rater": "amy", "pos')  # a crash mid-write
    again = Answers(items)
    assert "torn line" in capsys.readouterr().err and len(again.rows) == 1 and again.next_position("amy") == 1
    assert path.read_bytes().endswith(b"\n") and len(path.read_bytes().splitlines()) == 1


def test_several_raters_at_once_lose_and_repeat_nothing(run_copy, iard_dir):
    """Four raters answer all items at the same time over HTTP (each also double-posting): every answer once."""
    import threading

    items = items_of(run_copy, iard_dir)
    raters = ("ann", "bob", "cy", "dee")
    with ThreadServer(make_app(items, Answers(items), raters=raters)) as srv:
        def rate(name: str) -> None:
            for position in range(N):
                for _ in range(2):  # a double click: the second is ignored
                    post(srv.url + f"rate/{name}", {"position": position, "choice": "real", "confidence": 1 + position % 4})

        threads = [threading.Thread(target=rate, args=(r,)) for r in raters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    rows = read_answers(items)
    assert len(rows) == len(raters) * N and len(items.answers_path.read_bytes().splitlines()) == len(raters) * N
    for r in raters:
        mine = [row for row in rows if row["rater"] == r]
        assert sorted(row["position"] for row in mine) == list(range(N))
        assert [row["item"] for row in sorted(mine, key=lambda x: x["position"])] == [items.items[k].item for k in items.order(r)]


def test_an_answers_file_or_item_set_of_another_run_is_refused_and_left_alone(run_copy, iard_dir, tmp_path):
    items = items_of(run_copy, iard_dir)
    Answers(items).add("amy", 0, "real", 2)
    # another run with the same ids but other text (its own generation): the copied rating folder is refused
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    turns = pl.read_parquet(other / "turns.parquet").with_columns(pl.col("text") + " (changed)")
    turns.write_parquet(other / "turns.parquet")
    before = {p.name: p.read_bytes() for p in (other / FOLDER).iterdir()}
    with pytest.raises(RunError, match="belongs to another run"):
        prepare_items(other)
    # an answers file of another rating dropped into this one: refused, naming the line
    third = tmp_path / "third"
    shutil.copytree(run_copy, third)
    shutil.rmtree(third / FOLDER)
    fresh = items_of(third, iard_dir, seed=9)
    shutil.copyfile(items.answers_path, fresh.answers_path)
    with pytest.raises(RunError, match=r"answers.jsonl line 1 answers item set .* comes from another run"):
        Answers(fresh)
    res = CliRunner().invoke(cli, ["rate", str(third), "--port", str(free_port())])
    assert res.exit_code == 1 and "comes from another run" in res.output
    assert {p.name: p.read_bytes() for p in (other / FOLDER).iterdir()} == before
    assert fresh.answers_path.read_bytes() == items.answers_path.read_bytes()


def test_other_settings_never_replace_a_set_that_has_answers(run_copy, iard_dir):
    items = items_of(run_copy, iard_dir)
    doc = (run_copy / FOLDER / ITEMS).read_bytes()
    assert items_of(run_copy, iard_dir, seed=1).items_id != items.items_id  # no answers yet: replaced
    assert items_of(run_copy, iard_dir).settings["seed"] == 1  # a flag not passed keeps the saved value
    items = items_of(run_copy, iard_dir, seed=0)
    assert items.items_id == json.loads(doc)["items_id"]  # rebuilt: the same items again
    doc = (run_copy / FOLDER / ITEMS).read_bytes()
    Answers(items).add("amy", 0, "real", 2)
    with pytest.raises(RunError, match=r"seed 0 \(you passed 1\).*nothing was changed"):
        items_of(run_copy, iard_dir, seed=1)
    assert (run_copy / FOLDER / ITEMS).read_bytes() == doc and len(read_answers(items)) == 1


def test_too_few_dialogues_on_either_side_is_a_clear_error_and_writes_nothing(run_copy, iard_dir):
    gold = iard_dir / "formatted_IARD_annotated_gold.json"  # 77 dialogues, 10 in its test split
    with pytest.raises(DataError, match=r"the reference .*gold.json \(its 'test' split\) has 10 usable dialogues \(with a user turn\), fewer than "
                                        r"the 12 that --n 24 needs from it: pass --n 20 or less, or --reference-split all"):
        prepare_items(run_copy, reference=gold, n=24)
    with pytest.raises(DataError, match=rf"the run .* has {N_RUN} usable dialogues .*fewer than the 20 .*--n {2 * N_RUN}"):
        prepare_items(run_copy, reference=iard_dir, n=40, reference_split="all")
    with pytest.raises(DataError, match="even number of items, at least 4"):
        prepare_items(run_copy, reference=iard_dir, n=7)
    with pytest.raises(DataError, match="pass --reference"):
        prepare_items(run_copy)
    assert not (run_copy / FOLDER).exists()


def test_cli_refuses_a_port_in_use_a_bad_rater_name_and_a_missing_run(run_copy, iard_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = CliRunner().invoke(cli, ["rate", str(run_copy), "-r", str(iard_dir), "--n", "20", "--port", str(port)])
    assert res.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in res.output and "--port" in res.output
    assert not (run_copy / FOLDER).exists()
    res = CliRunner().invoke(cli, ["rate", str(run_copy), "-r", str(iard_dir), "--raters", "al ice"])
    assert res.exit_code == 2 and "a rater name is letters" in res.output
    res = CliRunner().invoke(cli, ["rate", str(tmp_path / "nope"), "-r", str(iard_dir), "--port", str(free_port())])
    assert res.exit_code == 1 and "nope" in res.output
    res = CliRunner().invoke(cli, ["rate", str(run_copy), "-r", str(iard_dir), "--port", "0"])
    assert res.exit_code == 2 and "not a TCP port" in res.output
    res = CliRunner().invoke(cli, ["rate", str(run_copy), "--report"])
    assert res.exit_code == 1 and "has no rating" in res.output


def plant(items, answers: Answers) -> None:
    """ann is always right and sure; bob agrees with ann on the first half of his order and guesses after."""
    truth = {it.item: it.source for it in items.items}
    for rater in ("ann", "bob"):
        for position, k in enumerate(items.order(rater)):
            it = items.items[k]
            right = "simulated" if truth[it.item] == "synthetic" else "real"
            choice = right if rater == "ann" or position < N // 2 else ("real" if position % 2 else "simulated")
            answers.add(rater, position, choice, 4 if rater == "ann" else 2,
                        "says goodbye twice" if truth[it.item] == "synthetic" and rater == "ann" else "", 4.0)


def test_report_puts_people_beside_the_discriminators_on_the_same_items_and_export_hub_carries_it(run_copy, iard_dir, tmp_path):
    items = items_of(run_copy, iard_dir)
    plant(items, Answers(items))
    res = CliRunner().invoke(cli, ["rate", str(run_copy), "--report", "-d", "tfidf,style", "--n-boot", "300"])
    assert res.exit_code == 0, res.output
    assert "people: AUC" in res.output and "simgen's discriminators on the same dialogues" in res.output
    report = json.loads((run_copy / "reports" / "human.json").read_text())
    assert (run_copy / "reports" / "human.html").read_text().count("<table>") >= 2
    assert report["raters"]["ann"]["accuracy"] == 1.0 and report["raters"]["ann"]["auc"] == 1.0
    assert report["raters"]["ann"]["done"] and report["pooled"]["answers"] == 2 * N
    assert report["verdict"].startswith("people can tell")
    fleiss = report["agreement"]["fleiss"]
    assert fleiss["items"] == N and fleiss["kappa"] is not None and fleiss["kappa"] < 1
    notes = report["notes"]["simulated, caught: what gave the simulator away"]
    assert notes["count"] == N // 2 and notes["top_words"][0] == ["says", N // 2]
    m = report["machine"]
    machine = json.loads((run_copy / FOLDER / "machine.json").read_text())
    assert set(machine["scores"]) == {it.item for it in items.items}  # the same items, each scored once
    from simgen.rating.stats import item_auc

    assert m["auc"] == item_auc(machine["scores"], {it.item: it.synthetic for it in items.items})
    assert m["pool"]["synthetic"] == N_RUN and m["pool"]["real"] == 37  # trained on every dialogue of both sides
    assert set(m["per_discriminator"]) == {"tfidf (user-turn)", "tfidf (dialogue)", "style (user-turn)", "style (dialogue)"}
    assert m["items_compared"] == N and m["rank_correlation_with_people"] is not None
    from simgen.export.hub import export_hub
    from simgen.generation.run import load_run

    out = tmp_path / "hub"
    export_hub(load_run(run_copy), out, repo_id="me/rated")
    assert json.loads((out / "reports" / "human.json").read_text())["pooled"] == report["pooled"]
    card = (out / "README.md").read_text()
    assert "## Human realism" in card and f"ROC-AUC {report['pooled']['auc']:.3f}" in card and "discriminators on the same" in card
