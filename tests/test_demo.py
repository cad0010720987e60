"""`cpcl demo` end to end at a tiny size: data, pretraining from scratch, four runs and the HTML report."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from cpcl.cli import main
from cpcl.experiments.demo_report import headline

TINY = ["--ids", "16", "3", "3", "--start", "scratch", "--pretrain-pairs", "160", "--pretrain-epochs", "1",
        "--epochs", "1", "--preset", "tiny"]


def test_the_headline_says_when_fine_tuning_gained_nothing():
    def runs(**r1):
        return {label: SimpleNamespace(results={"test": {"best": {"R1": value}}}) for label, value in r1.items()}

    flat = headline(runs(**{"zero-shot": 61.3, "ITC": 60.8, "CPCL": 59.9, "oracle": 61.0}))
    assert "Fine-tuning over the start: -0.30 R1 (oracle, the best of the three, against zero-shot 61.30); " \
           "a start this strong leaves this data little to learn" in " ".join(flat)
    gained = " ".join(headline(runs(**{"zero-shot": 30.0, "ITC": 40.0, "CPCL": 42.0, "oracle": 45.0})))
    assert "Fine-tuning over the start: +15.00 R1 (oracle, the best of the three, against zero-shot 30.00)." in gained
    assert "little to learn" not in gained


def test_demo_writes_the_report_and_reuses_its_pretraining(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "[7/7] report" in printed and str(out / "report.html") in printed
    for run in ("pretrain", "zero_shot", "itc", "cpcl", "oracle"):
        assert (out / run / "results.json").is_file(), run
    page = (out / "report.html").read_text()
    for label in ("zero-shot", "ITC", "CPCL", "oracle"):
        assert f"<th>{label}</th>" in page
    lead = page[page.index("<ul class='lead'>"):page.index("</ul>")]
    assert "CPCL - ITC: " in lead and "CPCL / oracle: " in lead and "This is one seed" in lead
    assert "Fine-tuning over the start: " in lead  # whether fine-tuning taught the start anything
    for label in ("ITC", "CPCL", "oracle"):  # one loss chart per method
        assert f">{label}: training loss</text>" in page
    assert ">CPCL: clusters and outliers</text>" in page and ">oracle: clusters" not in page
    assert page.count('class="example"') == 8
    figures = re.findall(r'<figure class="(hit|miss)"><img src="data:image/jpeg;base64,', page)
    assert len(figures) == 8 * 5
    reusable = json.loads((out / "demo.json").read_text())["reusable"]
    assert reusable["ids"] == [16, 3, 3] and reusable["style"] == "shifted"
    assert "drawn and worded in the shifted style" in page

    stamp = (out / "pretrain" / "best.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), *TINY, "--epochs", "2"]) == 0
    assert "reusing the data and the pretrained start" in capsys.readouterr().out
    assert (out / "pretrain" / "best.pt").stat().st_mtime_ns == stamp
    assert json.loads((out / "cpcl" / "results.json").read_text())["epochs"] == 2
