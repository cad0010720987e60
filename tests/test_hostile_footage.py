"""Footage as an attacker or a careless user gives it: frames OpenCV would crash on, boxes of another video, a
million boxes in a frame. The build skips and counts what it cannot use, keeps memory bounded, and says why in one
line when nothing is left; never a native crash or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cpcl.cli import main
from cpcl.index import detectors
from cpcl.index.detectors import MIN_BOX, OnnxDetector, nms
from cpcl.index.store import IndexStore
from cpcl.synth.config import FootageConfig
from cpcl.synth.footage import render_scene
from fault_support import one_error_line
from test_footage import DEVICE, FRAMES, build, checkpoint, constant_yolo, scene  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]


def cpcl_process(*args: str) -> subprocess.CompletedProcess:
    """`python -m cpcl ARGS` in a child process: a native crash there fails the test, not the test run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "cpcl", "-q", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def write_det(path: Path, rows: list[tuple]) -> Path:
    """A MOTChallenge det.txt of (frame from 1, x, y, w, h, conf) rows."""
    path.write_text("".join(f"{f},-1,{x},{y},{w},{h},{c}\n" for f, x, y, w, h, c in rows))
    return path


def scene_rows(scene: Path) -> list[tuple]:
    """The scene's own det.txt as (frame, x, y, w, h, conf) rows."""
    rows = [line.split(",") for line in (scene / "det.txt").read_text().splitlines() if line.strip()]
    return [(int(r[0]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6])) for r in rows]


# --- frames OpenCV's HOG would read past ----------------------------------------------------------------------

def test_frames_smaller_than_hogs_window_are_refused_before_opencv_sees_them():
    """Plain OpenCV corrupts its heap on these (free(): invalid next size, a segfault): checked in a child."""
    code = ("import numpy as np\nfrom cpcl.index.detectors import FrameError, HogDetector\nhog = HogDetector(None)\n"
            "for h, w in [(1, 1), (50, 200), (100, 40)]:\n"
            "    try:\n        hog.detect(np.full((h, w, 3), 100, np.uint8), 0)\n"
            "    except FrameError as err:\n        print('refused:', err)\n"
            "print(len(hog.detect(np.full((128, 64, 3), 100, np.uint8), 0)), 'found in a frame the size of the "
            "window')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["refused: a 1x1 frame is too small for the hog detector (with its border, 1x1, under its "
                         "64x128 window)",
                         "refused: a 200x50 frame is too small for the hog detector (with its border, 212x62, under "
                         "its 64x128 window)",
                         "refused: a 40x100 frame is too small for the hog detector (with its border, 64x124, under "
                         "its 64x128 window)"]
    assert lines[3] == "0 found in a frame the size of the window"


def test_a_one_pixel_frame_among_frames_is_skipped_counted_and_listed(tmp_path, checkpoint):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (1, 1)).save(folder / "000001.png")
    frames, _ = render_scene(FootageConfig(scenes=1, frames=3, persons=3, width=480, height=270), 0)
    for number, image in enumerate(frames, start=2):
        image.save(folder / f"{number:06d}.png")
    done = cpcl_process("index", "build", "--checkpoint", str(checkpoint), "--frames", str(folder), "--detector",
                        "hog", "--out", str(tmp_path / "idx"), *DEVICE)
    assert done.returncode == 0, done.stderr
    assert "from 3 frames" in done.stdout and "1 frames skipped: the detector cannot look at them" in done.stdout
    listed = [json.loads(line) for line in (tmp_path / "idx" / "unreadable.jsonl").read_text().splitlines()]
    assert listed == [{"path": "frames/000001.png", "problem": "a 1x1 frame is too small for the hog detector (with "
                       "its border, 1x1, under its 64x128 window); frame skipped"}]
    manifest = IndexStore.open(tmp_path / "idx").manifest
    assert manifest.count > 0 and manifest.sources["frames"]["size"] == [480, 270]


def test_a_video_too_small_for_hog_exits_non_zero_saying_why(tmp_path, checkpoint):
    writer = cv2.VideoWriter(str(tmp_path / "tiny.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (200, 50))
    for _ in range(5):
        writer.write(np.full((50, 200, 3), 100, np.uint8))
    writer.release()
    done = cpcl_process("index", "build", "--checkpoint", str(checkpoint), "--video", str(tmp_path / "tiny.mp4"),
                        "--detector", "hog", "--out", str(tmp_path / "idx"), *DEVICE)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "cpcl index: error: no person was embedded from tiny.mp4: all 5 frames read were skipped, first: a 200x50 "
        "frame is too small for the hog detector (with its border, 212x62, under its 64x128 window); frame skipped "
        "(all in unreadable.jsonl)")
    assert len((tmp_path / "idx" / "unreadable.jsonl").read_text().splitlines()) == 5


# --- nothing silent: a build that keeps no person says why ---------------------------------------------------------

@pytest.mark.parametrize("change, extra, reason", [
    (lambda f, x, y, w, h, c: (f, x + 1000, y, w, h, c), [],
     "all 36 boxes of the detector were dropped (36 lie outside the 320x192 frame): is the detections file for "
     "another video?"),
    (lambda f, x, y, w, h, c: (f, x, y, 0, -h, c), [],
     "all 36 boxes of the detector were dropped (36 have zero or negative size)"),
    (lambda f, x, y, w, h, c: (f + FRAMES, x, y, w, h, c), [],
     "all 36 boxes of the detector were dropped (36 are for frames after the source's last one): is the detections "
     "file for another video?"),
    (lambda f, x, y, w, h, c: (f, x, y, w, h, c), ["--det-threshold", "2"],
     "all 36 boxes of the detector were dropped (36 score below the threshold 2.0); lower --det-threshold"),
    (lambda f, x, y, w, h, c: (f, 1e308, y, 1e308, h, c), [],
     "all 36 boxes of the detector were dropped (36 lie outside the 320x192 frame): is the detections file for "
     "another video?"),
])
def test_boxes_that_keep_no_person_exit_non_zero_saying_why(scene, checkpoint, tmp_path, capsys, change, extra,
                                                             reason):
    det = write_det(tmp_path / "det.txt", [change(*row) for row in scene_rows(scene)])
    code = main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--video", str(scene / "video.mp4"),
                 "--detector", f"detections:{det}", "--out", str(tmp_path / "idx"), *extra, *DEVICE])
    assert code == 2
    assert one_error_line(capsys) == f"cpcl index: error: no person was embedded from video.mp4: {reason}"
    assert IndexStore.open(tmp_path / "idx").manifest.complete  # the index is written, empty


@pytest.mark.parametrize("args, message", [
    (["--det-threshold", "nan"], "--det-threshold must be a finite number, got nan"),
    (["--det-threshold=-inf"], "--det-threshold must be a finite number, got -inf"),
    (["--max-detections", "0"], "--max-detections must be at least 1, got 0"),
    (["--start", "1e20"], "--start: 1e+20 seconds since 1970 is outside the years 1-9999"),
    (["--crops", "FILE"], "--crops FILE is a file; give a folder to write the crops into"),
])
def test_footage_options_that_would_lose_everything_or_trace_back_are_one_line(scene, checkpoint, tmp_path, capsys,
                                                                               monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("a file, not a folder")
    assert build(scene, checkpoint, tmp_path / "idx", *args) == 2
    assert one_error_line(capsys) == f"cpcl index: error: {message}"


def test_a_coco_file_nested_100000_deep_is_one_line(scene, checkpoint, tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    code = main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--video", str(scene / "video.mp4"),
                 "--detector", f"detections:{tmp_path / 'deep.json'}", "--out", str(tmp_path / "idx"), *DEVICE])
    assert code == 2 and "deep.json: JSON nested too deeply to read" in one_error_line(capsys)


def test_onnx_boxes_of_nan_or_infinity_are_dropped_and_counted(tmp_path):
    rows = np.array([[40, 50, 40, 80, 0.9, 0.1], [np.nan, 50, 40, 80, 0.9, 0.1], [40, 50, np.inf, 80, 0.8, 0.1],
                     [40, 50, 40, 80, np.nan, 0.1], [100, 50, 30, 60, 0.7, 0.1]] + [[0] * 6] * 10, np.float32)
    detector = OnnxDetector(constant_yolo(tmp_path / "yolo.onnx", rows.T[None], (96, 128)), None, 0.45)
    found = detector.detect(np.zeros((96, 128, 3), np.uint8), 0)
    assert [d.box for d in found] == [(20, 10, 40, 80), (85, 20, 30, 60)]
    assert +detector.screen.dropped == {"nan": 3, "size": 10}  # the 10 empty rows have no size


# --- bounded memory -----------------------------------------------------------------------------------------------

def test_a_frame_keeps_its_best_max_detections_and_the_cap_is_counted(scene, checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [(1, *rng.uniform(0, 100, 2), 40, 80, round(float(score), 4)) for score in rng.uniform(0, 1, 40)]
    det = write_det(tmp_path / "det.txt", rows)
    code = main(["index", "build", "--checkpoint", str(checkpoint), "--video", str(scene / "video.mp4"),
                 "--detector", f"detections:{det}", "--out", str(tmp_path / "idx"), "--max-detections", "5", *DEVICE])
    assert code == 0
    assert "1 frames had more than --max-detections detections: their best were kept" in capsys.readouterr().out
    kept = [record["detector_score"] for record in IndexStore.open(tmp_path / "idx").read_records()]
    assert sorted(kept) == sorted(row[5] for row in rows)[-5:]


def test_shards_end_inside_a_frame_and_a_kill_between_shard_and_manifest_loses_nothing(scene, checkpoint, tmp_path,
                                                                                       monkeypatch):
    rows = [(1, 10 * k, 5, 40, 80, 1 - k / 100) for k in range(12)] + [(2, 30, 30, 40, 80, 0.5)]
    det = write_det(tmp_path / "det.txt", rows)
    args = ["-q", "index", "build", "--checkpoint", str(checkpoint), "--video", str(scene / "video.mp4"),
            "--detector", f"detections:{det}", "--shard-size", "5", *DEVICE]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = IndexStore.open(tmp_path / "whole")
    assert len(whole.read_records()) == 13
    assert [len(jsonl.read_text().splitlines()) for _, jsonl in whole.shards()] == [5, 5, 3]  # 12 in frame 0
    real, calls = IndexStore.append_shard, []

    def killed_after_the_second(self, embeddings, records):
        real(self, embeddings, records)
        calls.append(len(records))
        if len(calls) == 2:  # the shard is whole, the manifest still says frame 0 from its first 5 detections
            raise KeyboardInterrupt

    monkeypatch.setattr(IndexStore, "append_shard", killed_after_the_second)
    assert main([*args, "--out", str(tmp_path / "idx")]) == 130
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "idx")]) == 0
    resumed = IndexStore.open(tmp_path / "idx")
    assert resumed.read_records() == whole.read_records()
    np.testing.assert_allclose(resumed.read()[0], whole.read()[0], atol=1e-6)


def test_nms_needs_memory_linear_in_the_boxes():
    """The old NMS built an N x N float64 IoU matrix (3,000 boxes: 0.56 GB traced); OpenCV's needs O(N)."""
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(0, 600, (3000, 2)), rng.uniform(20, 200, (3000, 2))], axis=1)
    tracemalloc.start()
    kept = nms(boxes, rng.uniform(0, 1, 3000), 0.45)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 0 < len(kept) < 3000 and peak < 20 * 2**20


def test_onnx_candidates_past_the_cap_never_reach_nms(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "NMS_CANDIDATES", 2)
    rows = np.array([[20 + 30 * k, 50, 20, 40, score, 0] for k, score in enumerate([0.5, 0.9, 0.7, 0.8])]
                    + [[0] * 6] * 10, np.float32)
    detector = OnnxDetector(constant_yolo(tmp_path / "yolo.onnx", rows.T[None], (96, 128)), None, 0.45)
    found = detector.detect(np.zeros((96, 128, 3), np.uint8), 0)
    assert [d.score for d in found] == pytest.approx([0.9, 0.8]) and detector.screen.dropped["candidates"] == 2


def test_the_screen_against_a_box_by_box_reference():
    """Screen.keep (vectorised) against a loop over boxes: the same detections, the same counts by reason."""
    from cpcl.index.detectors import Screen

    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(-60, 260, (400, 2)), rng.uniform(-5, 90, (400, 2))], axis=1)
    boxes[::37] = [np.nan, 0, 10, 10]
    boxes[5::41] = [1e308, 1e308, 1e308, 1e308]
    boxes[7::43, 2] = np.inf
    scores = rng.uniform(0, 1, 400)
    scores[11::47] = np.nan
    screen = Screen(threshold=0.2, limit=30)
    found = screen.keep(boxes, scores, 200, 120)
    expected, dropped = [], {}
    for (x, y, w, h), score in zip(boxes.tolist(), scores.tolist()):
        if not np.isfinite([x, y, w, h, score]).all():
            reason = "nan"
        elif w <= 0 or h <= 0:
            reason = "size"
        elif score < 0.2:
            reason = "threshold"
        else:
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1 = 200 if x + w > 200 else round(x + w)  # min(200, round(x + w)), for x + w = inf too
            y1 = 120 if y + h > 120 else round(y + h)
            reason = "outside" if x1 <= x0 or y1 <= y0 else "small" if min(x1 - x0, y1 - y0) < MIN_BOX else None
            if reason is None:
                expected.append(((x0, y0, x1 - x0, y1 - y0), float(score)))
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
    best = sorted(expected, key=lambda item: -item[1])[:30]
    assert [(d.box, d.score) for d in found] == [item for item in expected if item in best]
    assert {reason: n for reason, n in screen.dropped.items() if n} == {**dropped, "cap": len(expected) - 30}
    assert screen.capped == 1
