"""The new switches end to end: a run with a pairing strategy and re-ranked evaluation;
`cpcl evaluate --rerank`, `cpcl search --rerank` and the page's API with re-ranking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpcl.cli import main
from cpcl.clustering.rerank import RerankConfig, prepare_gallery, rerank_distances
from cpcl.data.readers import load_dataset
from cpcl.evaluation.evaluate import evaluate_split
from cpcl.evaluation.report import training_curves
from cpcl.experiments.demo_report import read_run
from cpcl.index.search import Searcher
from cpcl.model.inference import load_for_inference
from cpcl.web.app import create_app
from cpcl.web.config import WebConfig
from search_support import build_gallery_index
from train_support import write_config, write_tiny_cuhk

TEXT = "a woman in a red coat with a black backpack"
RERANK = ["--rerank", "--rerank-k1", "4", "--rerank-k2", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, run dir) of one CPCL epoch with pair-fused labels, the pair setting chosen on val, and
    re-ranked evaluation."""
    base = tmp_path_factory.mktemp("variants")
    root = write_tiny_cuhk(base / "data", {"train": 6, "val": 3, "test": 4})
    config = write_config(base / "c.yaml", root, optim={"epochs": 1},
                          labels={"mode": "pair_fused"},
                          cluster_select={"on": "val", "grid": {"k1": [4], "k2": [1, 2], "eps": [0.5],
                                                                "min_samples": [2]}},
                          eval={"rerank": True, "rerank_options": {"k1": 4, "k2": 2}})
    assert main(["-q", "train", "-c", str(config), "--out", str(base / "run")]) == 0
    return root, base / "run"


def test_a_run_logs_the_strategy_and_reranked_metrics(trained):
    root, run = trained
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"pair_clusters", "select_pair_k1", "oracle_image_precision", "oracle_image_recall",
            "oracle_text_nmi"} <= set(record)
    assert not {"image_clusters", "text_clusters", "select_image_k1"} & set(record)  # pair_fused clusters pairs only
    loaded = load_for_inference(run / "best.pt", "cpu", "fp32")
    split = load_dataset("cuhk-pedes", root).splits["test"]
    expected = evaluate_split(loaded, split, 16, 0, rerank=RerankConfig(k1=4, k2=2))
    assert json.loads((run / "results.json").read_text())["test"]["best"] == expected


def test_the_report_plots_the_label_quality(trained):
    _, run = trained
    page = training_curves([read_run("CPCL+", run)])
    for title in ("clusters and outliers", "image labels vs true ids", "caption labels vs true ids"):
        assert f">CPCL+: {title}</text>" in page
    assert ">pair clusters</text>" in page and ">pair recall</text>" in page


def test_evaluate_rerank_options(trained, capsys):
    root, run = trained
    args = ["evaluate", "--checkpoint", str(run / "best.pt"), "--dataset", "cuhk-pedes", "--root", str(root), "--json",
            "--workers", "0", "--device", "cpu", "--precision", "fp32", "--batch-size", "16"]
    capsys.readouterr()
    assert main([*args, *RERANK]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((run / "results.json").read_text())["test"]["best"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--rerank", "--rerank-lambda", "1"]) == 0  # all weight on the original distance
    assert json.loads(capsys.readouterr().out) == pytest.approx(plain, abs=1e-9)
    assert main([*args, "--rerank", "--rerank-lambda", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lambda_value" in err


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> tuple[Path, Searcher]:
    base = tmp_path_factory.mktemp("rerank_search")
    build_gallery_index(base)
    return base / "idx", Searcher.open(base / "idx", device="cpu", precision="fp32", rerank=RerankConfig(k1=4, k2=2))


def expected_order(searcher: Searcher, query: np.ndarray, rows: np.ndarray | None = None) -> list[str]:
    """Gallery paths by the re-ranked distance computed here from the index's embeddings."""
    distance = rerank_distances(query[None], prepare_gallery(searcher.embeddings, RerankConfig(k1=4, k2=2)))[0]
    rows = np.arange(searcher.count) if rows is None else rows
    return [searcher.records[r]["path"] for r in rows[np.argsort(distance[rows], kind="stable")]]


def test_search_rerank_orders_by_the_reranked_distance(index, capsys):
    index_dir, searcher = index
    query = searcher.encoder.texts([TEXT])[0]

    def search(*args: str) -> list[dict]:
        assert main(["-q", "search", "--index", str(index_dir), "--json", "--device", "cpu", "--precision", "fp32",
                     TEXT, *args]) == 0
        return json.loads(capsys.readouterr().out)["results"]

    results = search("-k", "12", *RERANK)
    assert [r["path"] for r in results] == expected_order(searcher, query)
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)
    assert all(abs(r["score"] - float(searcher.embeddings[searcher.row_of(r["path"])] @ query)) < 1e-5
               for r in results)  # scores stay cosines
    c3 = np.array([row for row in range(searcher.count) if searcher.records[row]["camera"] == "c3"])
    assert [r["path"] for r in search("-k", "12", "--camera", "c3", *RERANK)] == expected_order(searcher, query, c3)
    plain = search("-k", "12")
    assert "distance" not in plain[0]
    assert [r["path"] for r in search("-k", "12", "--rerank", "--rerank-lambda", "1")] == [r["path"] for r in plain]


def test_the_page_switch_and_the_api(index):
    _, searcher = index
    client = TestClient(create_app(searcher, WebConfig(default_k=12)))
    page = client.get("/").text
    assert 'id="rerank"' in page and "rerank" in client.get("/static/app.js").text
    assert client.get("/api/info").json()["rerank"] is False
    body = client.post("/api/search", json={"text": TEXT, "rerank": True}).json()
    query = searcher.encoder.texts([TEXT])[0]
    assert [r["path"] for r in body["results"]] == expected_order(searcher, query)
    assert all(r["distance"] is not None for r in body["results"])
    assert client.post("/api/search", json={"text": TEXT}).json()["results"][0]["distance"] is None
    assert client.post("/api/search", json={"text": TEXT, "rerank": "yes"}).status_code == 422  # strict
    rerank_first = TestClient(create_app(searcher, WebConfig(default_k=12, rerank=True)))
    assert rerank_first.get("/api/info").json()["rerank"] is True
    assert rerank_first.post("/api/search", json={"text": TEXT}).json() == body
    image = searcher.root / searcher.records[3]["path"]
    with image.open("rb") as stream:
        upload = client.post("/api/search/image", files={"image": (image.name, stream.read())},
                             data={"rerank": "true"}).json()
    assert upload["results"][0]["distance"] is not None and upload["count"] == 12
