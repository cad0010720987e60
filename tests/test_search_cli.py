"""`cpcl search`: text and image queries, JSON output, -k, --min-score and metadata filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpcl.cli import main
from search_support import build_gallery_index, write_checkpoint, write_gallery

TEXT = "a woman in a red coat with a black backpack"


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(index directory, gallery root, good relative paths), built with metadata."""
    base = tmp_path_factory.mktemp("search")
    paths = build_gallery_index(base)
    return base / "idx", base / "imgs", paths


def search(index_dir: Path, capsys, *args: str) -> dict:
    assert main(["-q", "search", "--index", str(index_dir), "--json", "--device", "cpu", "--precision", "fp32",
                 *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_text_search_json_ranks_by_score(index, capsys):
    index_dir, root, paths = index
    out = search(index_dir, capsys, TEXT, "-k", "5")
    results = out["results"]
    assert out["query"] == {"text": TEXT} and out["gallery_root"] == str(root.resolve())
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert all(r["path"] in paths and Path(r["file"]) == root.resolve() / r["path"] for r in results)
    assert {"camera", "time", "note"} <= set(results[0]["metadata"])
    everything = search(index_dir, capsys, TEXT, "-k", "50")["results"]
    assert len(everything) == 12 and [r["path"] for r in everything[:5]] == [r["path"] for r in results]


def test_min_score_leaves_out_weaker_results(index, capsys):
    index_dir, _, _ = index
    scores = [r["score"] for r in search(index_dir, capsys, TEXT, "-k", "12")["results"]]
    floor = (scores[3] + scores[4]) / 2
    kept = search(index_dir, capsys, TEXT, "-k", "12", "--min-score", str(floor))["results"]
    assert [r["score"] for r in kept] == scores[:4]
    assert search(index_dir, capsys, TEXT, "--min-score", "1.01")["results"] == []


def test_image_search_finds_the_image_itself_first(index, capsys):
    index_dir, root, paths = index
    for rel in (paths[0], paths[7]):
        results = search(index_dir, capsys, "--image", str(root / rel), "-k", "3")["results"]
        assert results[0]["path"] == rel and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert results[1]["score"] < results[0]["score"]


def test_camera_and_time_filters(index, capsys):
    index_dir, _, _ = index
    results = search(index_dir, capsys, TEXT, "-k", "12", "--camera", "c2")["results"]
    assert len(results) == 4 and {r["metadata"]["camera"] for r in results} == {"c2"}
    results = search(index_dir, capsys, TEXT, "-k", "12", "--camera", "c1", "--camera", "c3")["results"]
    assert len(results) == 8 and {r["metadata"]["camera"] for r in results} == {"c1", "c3"}
    results = search(index_dir, capsys, TEXT, "-k", "12", "--from", "2024-05-01T10:00:00",
                     "--to", "2024-05-01T13:00")["results"]
    assert sorted(r["metadata"]["time"][11:13] for r in results) == ["10", "11", "12", "13"]
    both = search(index_dir, capsys, TEXT, "--camera", "c1", "--from", "2024-05-01T12:00:00")["results"]
    assert sorted(r["metadata"]["time"][11:13] for r in both) == ["14", "17"]  # c1: images 0, 3, 6, 9 at 8 + i h


def test_table_output_and_no_match(index, capsys):
    index_dir, _, paths = index
    assert main(["-q", "search", "--index", str(index_dir), TEXT, "-k", "2", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("gallery: ") and lines[1].split()[:3] == ["rank", "score", "path"]
    assert len(lines) == 4 and lines[2].split()[0] == "1" and lines[2].split()[2] in paths and "camera=" in lines[2]
    assert main(["-q", "search", "--index", str(index_dir), TEXT, "--min-score", "1.01", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == "no match"


@pytest.mark.parametrize("args, message", [
    ([TEXT, "--image", "x.png"], "not both"),
    ([], "give either"),
    (["   "], "empty"),
    ([TEXT, "-k", "0"], "-k must be at least 1"),
    (["--image", "/no/such.png"], "missing"),
    ([TEXT, "--from", "yesterday"], "is not a time"),
    ([TEXT, "--from", "2024-05-02", "--to", "2024-05-01"], "time range is empty"),
])
def test_bad_requests_are_one_line_errors(index, capsys, args, message):
    index_dir, _, _ = index
    assert main(["-q", "search", "--index", str(index_dir), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cpcl search: error:") and message in err and len(err.splitlines()) == 1


def test_filters_need_the_metadata(tmp_path, capsys):
    write_gallery(tmp_path / "imgs", count=3)
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "idx"), "--workers", "0", "--device", "cpu"]) == 0
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), TEXT, "--camera", "c1", "--device", "cpu"]) == 2
    assert "no camera metadata" in capsys.readouterr().err


@pytest.mark.parametrize("moved", [False, True])
def test_search_resolves_and_checks_the_checkpoint_once(index, capsys, monkeypatch, moved):
    """The checkpoint is resolved (a name to its file), hashed and compared with the manifest once per search; a
    wrong file is still refused."""
    import cpcl.index.encoder as encoder

    calls = {"resolve_checkpoint": 0, "sha256_of": 0, "_check_sha256": 0}
    for name in calls:
        def counted(*args, _name=name, _real=getattr(encoder, name)):
            calls[_name] += 1
            return _real(*args)
        monkeypatch.setattr(encoder, name, counted)
    index_dir = index[0]
    moved_args = ["--checkpoint", str(index_dir.parent / "tiny.pt")] if moved else []
    assert search(index_dir, capsys, TEXT, "-k", "1", *moved_args)["results"]
    assert calls == {"resolve_checkpoint": int(moved), "sha256_of": 1, "_check_sha256": 1}
    wrong = write_checkpoint(index_dir.parent / "other.pt", seed=1)
    assert main(["-q", "search", "--index", str(index_dir), TEXT, "--checkpoint", str(wrong), "--device", "cpu"]) == 2
    assert "sha256" in capsys.readouterr().err
