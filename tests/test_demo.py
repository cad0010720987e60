"""`cpcl demo` end to end at a tiny size: data, pretraining, three runs and the HTML report."""

from __future__ import annotations

import json
import re

from cpcl.cli import main

TINY = ["--ids", "8", "3", "3", "--pretrain-pairs", "24", "--pretrain-epochs", "1", "--epochs", "1",
        "--preset", "tiny"]


def test_demo_writes_the_report_and_reuses_its_pretraining(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "[6/6] report" in printed and str(out / "report.html") in printed
    for run in ("pretrain", "zero_shot", "itc", "cpcl"):
        assert (out / run / "results.json").is_file(), run
    page = (out / "report.html").read_text()
    for label in ("zero-shot", "ITC", "CPCL"):
        assert f"<th>{label}</th>" in page
    assert page.count("<svg") >= 3  # loss, val R1, CPCL clusters and outliers
    assert page.count('class="example"') == 8
    figures = re.findall(r'<figure class="(hit|miss)"><img src="data:image/jpeg;base64,', page)
    assert len(figures) == 8 * 5
    assert json.loads((out / "demo.json").read_text())["pretraining"]["ids"] == [8, 3, 3]

    stamp = (out / "pretrain" / "best.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), *TINY, "--epochs", "2"]) == 0
    assert "reusing the data and the pretrained model" in capsys.readouterr().out
    assert (out / "pretrain" / "best.pt").stat().st_mtime_ns == stamp
    assert json.loads((out / "cpcl" / "results.json").read_text())["epochs"] == 2
