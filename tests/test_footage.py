"""Footage into the index: SynthPedes scenes, the detectors (a detections file, HOG, an ONNX graph built here),
sampling, build / resume / add, person tracks, and `cpcl search` finding the right person in the right frame."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cpcl.cli import main
from cpcl.index.detectors import (DETECTORS, DetectionsFile, FrameError, HogDetector, OnnxDetector, box_iou,
                                  letterbox, make_detector, nms)
from cpcl.index.encoder import Encoder
from cpcl.index.footage import SourceState, VideoFrames, natural_key
from cpcl.index.search import Filters, Searcher
from cpcl.index.store import IndexStore
from cpcl.index.config import TRACKERS, IndexConfig
from cpcl.index.tracks import link_tracks
from cpcl.synth.config import FootageConfig
from cpcl.synth.footage import render_scene
from cpcl.utils.errors import ConfigError, CpclError, DataError
from search_support import write_checkpoint

FRAMES, FPS, SIZE = 12, 8.0, (320, 192)  # the test scene: frames, frame rate, width x height
DEVICE = ["--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A SynthPedes scene written by `cpcl synth --footage`: frames/, video.mp4, det.txt, gt.json."""
    out = tmp_path_factory.mktemp("footage")
    assert main(["-q", "synth", str(out), "--footage", "--scenes", "1", "--frames", str(FRAMES), "--persons", "3",
                 "--frame-size", str(SIZE[0]), str(SIZE[1]), "--fps", str(FPS)]) == 0
    return out / "SynthPedes-footage" / "scene_000"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def truth(scene: Path) -> dict:
    return json.loads((scene / "gt.json").read_text())


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video, RGB, decoded in order (the reference for seeking)."""
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def build(scene: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--video", str(scene / "video.mp4"),
                 "--detector", f"detections:{scene / 'det.txt'}", "--out", str(out), "--batch-size", "4",
                 *DEVICE, *extra])


# --- SynthPedes scene mode ---------------------------------------------------------------------------------------

def test_scene_mode_writes_frames_video_and_true_boxes(scene):
    gt = truth(scene)
    assert gt["size"] == list(SIZE) and gt["fps"] == FPS and len(gt["persons"]) == 3
    assert sorted(p.name for p in (scene / "frames").iterdir()) == [f"{i:06d}.jpg" for i in range(1, FRAMES + 1)]
    decoded = video_frames(scene / "video.mp4")
    assert len(decoded) == FRAMES and decoded[0].shape == (SIZE[1], SIZE[0], 3)
    capture = cv2.VideoCapture(str(scene / "video.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    jpeg = np.asarray(Image.open(scene / "frames" / "000005.jpg"), dtype=np.float32)
    assert np.abs(decoded[4].astype(np.float32) - jpeg).mean() < 6  # the same picture, through two codecs
    for person in gt["persons"]:
        boxes = [b for b in gt["boxes"] if b["person"] == person["person"]]
        assert [b["frame"] for b in boxes] == list(range(FRAMES))  # everyone stays in view
        for b in boxes:
            x, y, w, h = b["box"]
            assert 0 <= x and x + w <= SIZE[0] and 0 <= y and y + h <= SIZE[1]
            assert 0.8 * person["height"] <= h <= 1.2 * person["height"] and w < h  # standing persons
        shift = boxes[-1]["box"][0] + boxes[-1]["box"][2] / 2 - boxes[0]["box"][0] - boxes[0]["box"][2] / 2
        if person["view"] in ("left", "right"):  # walkers move the way they face
            assert np.sign(shift) == (1 if person["view"] == "right" else -1)
    lines = (scene / "det.txt").read_text().splitlines()
    assert len(lines) == len(gt["boxes"]) and lines[0].split(",")[0] == "1"


def test_a_frame_read_by_seeking_is_the_frame_read_in_order(scene):
    """The page reads one frame by seeking; the build reads them in order: they must be the same frame."""
    in_order = video_frames(scene / "video.mp4")
    video = VideoFrames(scene / "video.mp4")
    try:
        for index in (7, 0, 11, 3):
            np.testing.assert_array_equal(video.frame(index), in_order[index])
        assert [i for i, _, _ in video.frames(5, lambda i: i % 2 == 0)] == [6, 8, 10]
        with pytest.raises(DataError, match="no frame 40"):
            video.frame(40)
    finally:
        video.close()


def test_scene_mode_is_deterministic_per_seed():
    cfg = FootageConfig(scenes=1, frames=2, persons=2, width=160, height=96)
    frames, gt = render_scene(cfg, 0)
    again, gt_again = render_scene(cfg, 0)
    assert gt == gt_again and np.array_equal(np.asarray(frames[1]), np.asarray(again[1]))
    other, _ = render_scene(FootageConfig(scenes=1, frames=2, persons=2, width=160, height=96, seed=1), 0)
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(other[0]))
    assert len(gt["boxes"]) == 4


def test_synth_footage_options_are_checked(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--footage", "--frame-size", "32", "32"]) == 2
    assert "at least 64x64" in capsys.readouterr().err
    assert main(["synth", "--footage"]) == 2
    assert "needs an output folder" in capsys.readouterr().err


# --- detectors ---------------------------------------------------------------------------------------------------

def test_box_iou_and_nms_against_loops():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 50, (20, 2)), rng.uniform(1, 30, (20, 2))], axis=1)
    b = a[::-1] + rng.normal(0, 3, a.shape)
    b[:, 2:] = np.abs(b[:, 2:]) + 1

    def iou(p, q):
        w = max(0.0, min(p[0] + p[2], q[0] + q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[1] + p[3], q[1] + q[3]) - max(p[1], q[1]))
        return w * h / (p[2] * p[3] + q[2] * q[3] - w * h)

    np.testing.assert_allclose(box_iou(a, b), [[iou(p, q) for q in b] for p in a], atol=1e-12)
    scores = rng.uniform(0, 1, 20)
    kept = nms(a, scores, 0.3)
    for i in range(20):  # kept: better first, overlapping no better kept box; dropped: overlaps a better kept one
        better = [j for j in kept if scores[j] > scores[i]]
        assert (i in kept) == all(iou(a[i], a[j]) <= 0.3 for j in better)
    assert list(kept) == sorted(kept, key=lambda j: -scores[j])


def test_detections_files_mot_and_coco(tmp_path):
    mot = tmp_path / "det.txt"
    mot.write_text("1,-1,10,20,30,60,0.9,-1,-1,-1\n1,-1,-5,0,20,40,0.4,-1,-1,-1\n3 -1 100 10 50 90 0.8\n")
    detector = DetectionsFile(mot, threshold=None)
    frame = np.zeros((80, 120, 3), np.uint8)
    assert detector.wants(0) and not detector.wants(1) and detector.wants(2)  # frame numbers count from 1
    assert [(d.box, d.score) for d in detector.detect(frame, 0)] == [((10, 20, 30, 60), 0.9), ((0, 0, 15, 40), 0.4)]
    assert [d.box for d in detector.detect(frame, 2)] == [(100, 10, 20, 70)]  # clipped to the frame
    assert [d.score for d in DetectionsFile(mot, threshold=0.5).detect(frame, 0)] == [0.9]
    coco = tmp_path / "results.json"
    coco.write_text(json.dumps([{"image_id": 2, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.7},
                                {"image_id": 2, "category_id": 3, "bbox": [5, 5, 30, 40], "score": 0.9},
                                {"image_id": 1, "bbox": [0, 0, 10, 20], "score": 0.5}]))
    detector = DetectionsFile(coco, threshold=None)
    assert [(d.box, d.score) for d in detector.detect(frame, 1)] == [((1, 2, 30, 40), 0.7)]  # a car is not a person
    assert [d.box for d in detector.detect(frame, 0)] == [(0, 0, 10, 20)]


@pytest.mark.parametrize("name, text, message", [
    ("det.txt", "1,-1,10,20,30\n", "det.txt:1: a MOTChallenge detection has at least 7 fields"),
    ("det.txt", "0,-1,10,20,30,40,1\n", "det.txt:1: the frame number counts from 1"),
    ("det.txt", "1,-1,10,nan,30,40,1\n", "det.txt:1: expected numbers"),
    ("r.json", '{"image_id": 1}', "COCO results are a JSON list"),
    ("r.json", '[{"image_id": 1, "bbox": [1, 2, 3]}]', "item 0: bbox must be 4 numbers"),
    ("r.json", '[{"image_id": "a.jpg", "bbox": [1, 2, 3, 4]}]', "image_id is the frame number"),
    ("r.json", "[{", "malformed JSON"),
])
def test_a_bad_detections_file_is_one_line_naming_the_place(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message.replace("[", r"\[")) as err:
        DetectionsFile(tmp_path / name, None)
    assert "\n" not in str(err.value)


def test_detector_specs_are_checked():
    assert set(DETECTORS) == {"detections", "hog", "onnx"}
    with pytest.raises(ConfigError, match=r"valid: detections:FILE \(MOTChallenge .*\), hog, onnx:MODEL.onnx"):
        make_detector("yolo")
    with pytest.raises(ConfigError, match="needs MODEL.onnx after a colon"):
        make_detector("onnx")
    with pytest.raises(ConfigError, match="takes no argument"):
        make_detector("hog:fast")
    with pytest.raises(DataError, match="no such file"):
        make_detector("onnx:/nonexistent/model.onnx")


def constant_yolo(path: Path, output: np.ndarray, size: tuple[int, int]) -> Path:
    """An ONNX graph with an image input [1, 3, H, W] whose output is `output` (+ 0 x the image's mean)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
         helper.make_node("Add", ["boxes", "nothing"], ["output0"])],
        "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        [numpy_helper.from_array(output.astype(np.float32), "boxes"),
         numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
def test_onnx_detector_plumbing_with_a_graph_that_emits_known_boxes(tmp_path, layout):
    """Plumbing only (the graph ignores the pixels): letterbox, output layout, person class, threshold, NMS and the
    way back to frame pixels."""
    frame = np.zeros((100, 200, 3), np.uint8)  # letterboxed into 96 x 64: scale 0.48, 8 px of grey above and below
    _, scale, pad = letterbox(frame, (64, 96))
    assert scale == pytest.approx(0.48) and pad == (0.0, 8.0)
    wanted = [((20, 10, 40, 80), 0.9), ((120, 30, 30, 60), 0.6)]
    candidates = [(box, person, other) for box, person in wanted for other in [0.1]]
    candidates += [((22, 12, 40, 78), 0.8, 0.1),  # overlaps the first: NMS drops it
                   ((150, 5, 20, 40), 0.1, 0.1),  # below the threshold
                   ((60, 40, 25, 50), 0.05, 0.95)]  # another class
    rows = []
    for (x, y, w, h), person, other in candidates:
        cx, cy = (x + w / 2) * scale + pad[0], (y + h / 2) * scale + pad[1]
        rows.append([cx, cy, w * scale, h * scale, person, other])
    rows += [[0, 0, 0, 0, 0, 0]] * 10  # more candidates than columns, as in any real model
    table = np.array(rows, dtype=np.float32)
    if layout == "yolov8":
        output = table.T[None]  # [1, 4 + C, N]
    else:
        output = np.insert(table, 4, 1.0, axis=1)[None]  # [1, N, 5 + C] with objectness 1
    detector = OnnxDetector(constant_yolo(tmp_path / "yolo.onnx", output, (64, 96)), threshold=0.25, nms_iou=0.45)
    assert detector.size == (64, 96)
    found = detector.detect(frame, 0)
    assert [d.box for d in found] == [box for box, _ in wanted]
    assert [d.score for d in found] == pytest.approx([score for _, score in wanted])


def test_hog_finds_persons_of_a_scene_at_their_boxes(tmp_path):
    """HOG's boxes are its windows shrunk to the person: on a rendered scene some must match a true box at IoU
    0.5 (its recall and precision are measured by benchmarks/bench_footage.py, not asserted here)."""
    frames, gt = render_scene(FootageConfig(scenes=1, frames=3, persons=3, width=480, height=270), 0)
    detector, matched, found = HogDetector(None), 0, 0
    for index, image in enumerate(frames):
        boxes = [d.box for d in detector.detect(np.asarray(image), index)]
        found += len(boxes)
        assert all(x >= 0 and y >= 0 and x + w <= 480 and y + h <= 270 for x, y, w, h in boxes)
        true = [b["box"] for b in gt["boxes"] if b["frame"] == index]
        if boxes:
            matched += int((box_iou(np.array(boxes), np.array(true)).max(axis=0) >= 0.5).sum())
    assert found > 0 and matched > 0
    with pytest.raises(FrameError, match="too small for the hog detector"):  # lower than a window: refused, no crash
        detector.detect(np.full((64, 96, 3), 100, np.uint8), 0)


# --- sampling --------------------------------------------------------------------------------------------------

def test_sampling_by_every_and_by_fps():
    every = SourceState("video", "hog", None, 3, None, 25.0, None, None)
    assert [i for i in range(10) if every.keeps(i)] == [0, 3, 6, 9]
    by_fps = SourceState("video", "hog", None, 1, 2.0, 25.0, None, None)
    kept = [i for i in range(100) if by_fps.keeps(i)]
    assert [int(i / 25.0 * 2.0) for i in kept] == list(range(len(kept)))  # one frame in each half second
    assert len(kept) == 8
    assert sorted(["f10.png", "f2.png", "f1.png"], key=natural_key) == ["f1.png", "f2.png", "f10.png"]


# --- build, resume, add, search ------------------------------------------------------------------------------------

def test_the_detections_file_path_finds_the_right_person_in_the_right_frame(scene, checkpoint, tmp_path, capsys):
    assert build(scene, checkpoint, tmp_path / "idx", "--every", "2", "--start", "2024-05-01T08:00:00",
                 "--camera", "cam1") == 0
    gt = truth(scene)
    store = IndexStore.open(tmp_path / "idx")
    records = store.read_records()
    assert len(records) == 3 * FRAMES // 2 and {r["frame"] for r in records} == set(range(0, FRAMES, 2))
    first = records[0]
    assert first["source"] == "video.mp4" and first["offset"] == 0.0 and first["time"] == "2024-05-01T08:00:00.000"
    assert records[3]["offset"] == 0.25 and records[3]["time"] == "2024-05-01T08:00:00.250"
    state = SourceState.from_dict(store.manifest.sources["video.mp4"], "manifest")
    assert state.complete and state.size == list(SIZE) and state.source_fps == pytest.approx(FPS)
    frame, person = 6, gt["boxes"][0]["person"]
    x, y, w, h = next(b["box"] for b in gt["boxes"] if b["frame"] == frame and b["person"] == person)
    query = tmp_path / "query.png"
    Image.fromarray(video_frames(scene / "video.mp4")[frame][y:y + h, x:x + w]).save(query)
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "--image", str(query), "-k", "3", "--json",
                 *DEVICE]) == 0
    best = json.loads(capsys.readouterr().out)["results"][0]
    assert best["file"] == str(scene / "video.mp4")
    footage = best["footage"]
    assert (footage["source"], footage["frame"], footage["box"], footage["offset"]) == ("video.mp4", 6, [x, y, w, h],
                                                                                      0.75)
    assert best["metadata"] == {"time": "2024-05-01T08:00:00.750", "camera": "cam1"}
    span = footage["span"]
    assert span["first_frame"] <= 6 <= span["last_frame"] and span["detections"] >= 1
    searcher = Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")
    row = next(i for i, r in enumerate(searcher.records) if r["frame"] == 6 and r["box"] == [x, y, w, h])
    members = [searcher.records[i] for i in np.flatnonzero(searcher.track == searcher.track[row])]
    own = {(b["frame"], tuple(b["box"])) for b in gt["boxes"] if b["person"] == person}
    assert all((m["frame"], tuple(m["box"])) in own for m in members)  # a track is one person
    cosines = searcher.embeddings[searcher.tracks[int(searcher.track[row])].rows] @ \
        searcher.encoder.pil_images([Image.open(query)])[0]
    assert cosines.max() > 0.999  # the query is that detection's crop: the person is shown there, scored by ...
    assert best["score"] == pytest.approx(np.sort(cosines)[-3:].mean(), abs=1e-5)  # ... its best 3 detections
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "--image", str(query), "-k", "1", *DEVICE]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["rank", "score", "source", "time", "frame", "box", "x,y,w,h", "metadata"]
    assert "video.mp4" in table[2] and f"{x},{y},{w},{h}" in table[2] and "0:00." in table[2]


def test_grouped_search_is_the_brute_force_ranking_of_people(scene, checkpoint, tmp_path):
    """Each person once, ranked by the mean cosine of its best 3 allowed detections, exactly as scoring every
    track would rank them, with and without a filter."""
    assert build(scene, checkpoint, tmp_path / "idx", "--every", "3", "--start", "0") == 0  # time = offset
    searcher = Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    for time_to in (None, 0.9):
        filters = Filters.parse(time_to=time_to)
        allowed = searcher.allowed(filters)
        for _ in range(5):
            query = rng.normal(size=searcher.dim).astype(np.float32)
            query /= np.linalg.norm(query)
            want = []
            for key, track in searcher.tracks.items():
                rows = track.rows if allowed is None else track.rows[allowed[track.rows]]
                if len(rows):
                    want.append((float(np.sort(searcher.embeddings[rows] @ query)[-3:].mean()), key))
            want.sort(key=lambda pair: -pair[0])
            for k in (1, 2, 4):  # fewer rows fetched than there are (1, 2), or all of them (4)
                hits = searcher.search_vector(query, k, filters=filters)
                assert [int(searcher.track[h.row]) for h in hits] == [key for _, key in want[:k]]
                np.testing.assert_allclose([h.score for h in hits], [score for score, _ in want[:k]], atol=1e-5)
                assert all(allowed is None or allowed[h.row] for h in hits)


def test_footage_on_milvus_is_grouped_and_filtered_as_in_the_folder_index(scene, checkpoint, tmp_path, lite):
    """The same persons (tracks), hits, spans and scores from a Milvus collection as from the shards."""
    for name, extra in (("flat", ()), ("idx", ("--backend", "milvus", "--milvus-uri", lite))):
        assert build(scene, checkpoint, tmp_path / name, "--every", "2", "--start", "0", "--camera", "cam1",
                     *extra) == 0
    flat, milvus = (Searcher.open(tmp_path / name, device="cpu", precision="fp32") for name in ("flat", "idx"))
    assert milvus.backend.name == "milvus" and milvus.tracks and np.array_equal(milvus.track, flat.track)
    rng = np.random.default_rng(0)
    for filters in (Filters(), Filters.parse(["cam1"], time_to=0.9, sources=["video.mp4"])):
        for group, rerank in ((True, False), (False, False), (True, True)):
            query = rng.normal(size=flat.dim).astype(np.float32)
            query /= np.linalg.norm(query)
            got = milvus.search_vector(query, 4, filters=filters, group=group, rerank=rerank)
            want = flat.search_vector(query, 4, filters=filters, group=group, rerank=rerank)
            assert [(h.path, h.footage) for h in got] == [(h.path, h.footage) for h in want] and want
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


def test_a_killed_build_continues_without_embedding_anything_twice(scene, checkpoint, tmp_path, monkeypatch):
    assert build(scene, checkpoint, tmp_path / "whole", "--shard-size", "5") == 0
    original, calls = Encoder.pil_images, []

    def killed(self, images):
        calls.append(len(images))
        if len(calls) == 4:  # inside the second shard: the first is whole, the second never written
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(Encoder, "pil_images", killed)
    assert build(scene, checkpoint, tmp_path / "idx", "--shard-size", "5") == 130
    done = len(IndexStore.open(tmp_path / "idx").read_records())
    assert done == 5  # one shard: frame 0's three persons and two of frame 1's (a shard may end inside a frame)
    embedded: list[int] = []
    monkeypatch.setattr(Encoder, "pil_images", lambda self, images: (embedded.append(len(images)),
                                                                     original(self, images))[1])
    assert build(scene, checkpoint, tmp_path / "idx", "--shard-size", "5") == 0
    assert sum(embedded) == 3 * FRAMES - done
    resumed, whole = IndexStore.open(tmp_path / "idx"), IndexStore.open(tmp_path / "whole")
    assert resumed.read_records() == whole.read_records()
    np.testing.assert_allclose(resumed.read()[0], whole.read()[0], atol=1e-6)
    embedded.clear()
    assert main(["index", "add", "--index", str(tmp_path / "idx"), "--video", str(scene / "video.mp4"),
                 "--detector", f"detections:{scene / 'det.txt'}", *DEVICE]) == 0
    assert embedded == [] and resumed.manifest.count == 3 * FRAMES


def test_a_source_is_continued_only_with_its_own_options(scene, checkpoint, tmp_path, capsys):
    assert build(scene, checkpoint, tmp_path / "idx", "--every", "3") == 0
    code = main(["-q", "index", "add", "--index", str(tmp_path / "idx"), "--video", str(scene / "video.mp4"),
                 "--detector", f"detections:{scene / 'det.txt'}", "--every", "2", *DEVICE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "video.mp4 is indexed with every 3 (now 2); continue it with the same options" in err


def test_frame_folders_coco_results_and_crops_on_disk(scene, checkpoint, tmp_path, capsys):
    gt = truth(scene)
    coco = tmp_path / "results.json"
    coco.write_text(json.dumps([{"image_id": b["frame"] + 1, "category_id": 1, "bbox": b["box"], "score": 0.5}
                                for b in gt["boxes"] if b["frame"] < 4]))
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--frames", str(scene / "frames"),
                 "--detector", f"detections:{coco}", "--source-fps", "4", "--out", str(tmp_path / "idx"),
                 "--crops", str(tmp_path / "crops"), *DEVICE]) == 0
    records = IndexStore.open(tmp_path / "idx").read_records()
    assert len(records) == 12 and records[0]["source"] == "frames" and records[0]["file"] == "frames/000001.jpg"
    assert records[-1]["frame"] == 3 and records[-1]["offset"] == 0.75 and records[-1]["detector_score"] == 0.5
    crop = Image.open(records[4]["crop"])
    assert crop.size == tuple(records[4]["box"][2:])
    reference = np.asarray(Image.open(scene / "frames" / "000002.jpg"), dtype=np.float32)
    x, y, w, h = records[4]["box"]
    assert np.abs(np.asarray(crop, dtype=np.float32) - reference[y:y + h, x:x + w]).mean() < 4  # the JPEG of the cut
    capsys.readouterr()
    assert main(["index", "add", "--index", str(tmp_path / "idx"), *DEVICE]) == 0  # images of the root: not frames
    assert "0 images embedded" in capsys.readouterr().out


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CpclError, match=r"the onnx detector needs the onnxruntime package .*pip install "
                                        r"'cpcl\[footage\]'") as err:
        make_detector("onnx:model.onnx")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args, message", [
    (["--frames", "F"], "need --detector"),
    (["--frames", "F", "--detector", "hog", "--fps", "2"], "--fps needs the frame rate of frames"),
    (["--video", "V", "V", "--detector", "detections:D"], "holds the boxes of one source"),
    (["--video", "V", "--detector", "hog", "--every", "0"], "--every must be at least 1"),
    (["--images", "F", "--detector", "hog"], "--detector is for footage"),
    (["--video", "V", "--detector", "hog", "--start", "yesterday"], "--start: 'yesterday' is not a time"),
])
def test_footage_options_are_checked_in_one_line(scene, checkpoint, tmp_path, capsys, args, message):
    names = {"F": str(scene / "frames"), "V": str(scene / "video.mp4"), "detections:D": f"detections:{scene}/det.txt"}
    argv = ["-q", "index", "build", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "idx"), *DEVICE]
    assert main(argv + [names.get(arg, arg) for arg in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# --- tracks ------------------------------------------------------------------------------------------------------

def person_records(paths: dict[str, list[tuple[int, list[int]]]], fps: float = 10.0) -> tuple[list[dict], list[str]]:
    """Detection records of persons (name -> [(frame, box)]) in one source, in frame order, and whose each is."""
    rows = sorted((frame, name, box) for name, path in paths.items() for frame, box in path)
    records = [{"path": f"v.mp4#{f}:{k}", "source": "v.mp4", "frame": f, "offset": round(f / fps, 3), "box": box,
                "detector_score": 1.0} for k, (f, _, box) in enumerate(rows)]
    return records, [name for _, name, _ in rows]


def one_person_each(label: np.ndarray, who: list[str]) -> dict[str, set[int]]:
    """Person -> the tracks holding its detections, after checking that no track holds two persons."""
    for key in set(label.tolist()):
        assert len({who[i] for i in np.flatnonzero(label == key)}) == 1, "a track holds two persons"
    return {name: {int(label[i]) for i, n in enumerate(who) if n == name} for name in set(who)}


@pytest.mark.parametrize("tracker", TRACKERS)
def test_two_crossing_persons_stay_two_tracks(tracker):
    """A walks right, B walks left at the same height; their boxes cover each other in the middle frames, where
    the detector sees only the nearer one (B), as HOG does. The crop of the pair looks like either."""
    a_path = [(f, [10 * f, 50, 30, 80]) for f in range(21) if f not in (9, 10, 11)]
    b_path = [(f, [200 - 10 * f + 2, 52, 30, 80]) for f in range(21)]
    records, who = person_records({"a": a_path, "b": b_path})
    e = np.eye(3, dtype=np.float32)
    mixed = (e[0] + e[1]) / np.sqrt(2)
    embeddings = np.stack([mixed if 8 <= r["frame"] <= 12 else e[0 if n == "a" else 1] for r, n in zip(records, who)])
    label, tracks = link_tracks(records, embeddings, {"v.mp4": 10.0}, IndexConfig(tracker=tracker))
    assert one_person_each(label, who) == {"a": {int(label[who.index("a")])}, "b": {int(label[who.index("b")])}}
    track = tracks[int(label[who.index("b")])]
    assert (track.first_frame, track.last_frame, track.start, track.end, len(track.rows)) == (0, 20, 0.0, 2.0, 21)
    assert records[track.best]["frame"] not in range(7, 14)  # the best crop is not one covering the other person
    np.testing.assert_allclose(np.linalg.norm(track.embedding), 1.0, rtol=1e-6)
    assert track.strip(5) == [int(r) for r in track.rows[[0, 5, 10, 15, 20]]]


def test_a_gap_longer_than_the_tracker_keeps_is_re_linked_by_appearance():
    """A walks behind a pillar for 1.5 s (longer than the tracker keeps a lost track) and comes out further on;
    B, another person, comes out near where A went in, at the same time."""
    a_path = [(f, [5 * f, 40, 30, 80]) for f in range(10)] + [(f, [5 * f, 40, 30, 80]) for f in range(25, 35)]
    b_path = [(f, [50, 44, 30, 80]) for f in range(26, 35)]
    records, who = person_records({"a": a_path, "b": b_path})
    e = np.eye(4, dtype=np.float32)
    rng = np.random.default_rng(0)
    embeddings = np.stack([e[0 if n == "a" else 1] + rng.normal(0, 0.05, 4).astype(np.float32) for n in who])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    config = IndexConfig(lost_seconds=0.5, link_seconds=2.0, link_cosine=0.9)
    label, tracks = link_tracks(records, embeddings, {"v.mp4": 10.0}, config)
    tracks_of = one_person_each(label, who)
    assert len(tracks_of["a"]) == 1 and len(tracks_of["b"]) == 1
    whole = tracks[next(iter(tracks_of["a"]))]
    assert (whole.first_frame, whole.last_frame, len(whole.rows)) == (0, 34, 20)
    apart, _ = link_tracks(records, embeddings, {"v.mp4": 10.0}, replace(config, link_cosine=1.0))
    assert len(one_person_each(apart, who)["a"]) == 2  # without the appearance cue the gap splits A
    too_late, _ = link_tracks(records, embeddings, {"v.mp4": 10.0}, replace(config, link_seconds=1.0))
    assert len(one_person_each(too_late, who)["a"]) == 2  # a gap longer than the window is not re-linked
    crops = [{"path": "crop.jpg"}]  # rows that are not detections are tracks of their own, without a Track
    label, tracks = link_tracks(records + crops, np.concatenate([embeddings, e[:1]]), {"v.mp4": 10.0}, config)
    assert label[-1] == len(records) and len(records) not in tracks
