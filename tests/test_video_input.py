"""Video input: PyAV when OpenCV cannot open a file, true times under a variable frame rate, rotation metadata, and
a broken, empty or non-video file reported in one line with a non-zero exit while the other sources are kept."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from cpcl.cli import main
from cpcl.index.footage import AvFrames, FrameReader, SourceState, VideoFrames, open_video
from cpcl.index.store import IndexStore
from cpcl.utils.errors import DataError
from search_support import write_checkpoint

TIMES = [0.0, 0.1, 0.2, 0.5, 0.6, 1.2, 1.3, 1.4]  # frame times of the variable-rate video, seconds
SIZE = (96, 144)  # width, height
DEVICE = ["--device", "cpu", "--precision", "fp32"]


def write_video(path: Path, times: list[float], rotation: int = 0) -> list[np.ndarray]:
    """An MPEG-4 video through PyAV, frame i at times[i] (millisecond time base), with a display rotation; its
    frames as stored (RGB [H, W, 3]): a grey level a frame and a white block at the top left."""
    frames = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times):
            rgb = np.full((SIZE[1], SIZE[0], 3), 20 + 25 * i, np.uint8)
            rgb[:16, :24] = 255  # a block at the top left
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
            frames.append(rgb)
        container.mux(stream.encode())
    return frames


def read_all(reader) -> list[tuple[int, float, np.ndarray]]:
    try:
        return list(reader.frames(0, lambda i: True))
    finally:
        reader.close()


def test_both_decoders_give_true_times_under_a_variable_frame_rate(tmp_path):
    written = write_video(tmp_path / "vfr.mp4", TIMES)
    for reader in (VideoFrames(tmp_path / "vfr.mp4"), AvFrames(tmp_path / "vfr.mp4")):
        frames = read_all(reader)
        assert [i for i, _, _ in frames] == list(range(len(TIMES)))
        assert [round(t, 3) for _, t, _ in frames] == TIMES  # not index / average rate (0.5625 s for frame 3)
        assert all(np.abs(rgb.astype(int) - w).mean() < 8 for (_, _, rgb), w in zip(frames, written))
    state = SourceState("video", "hog", None, 1, None, 16 / 3, None, None)
    assert state.record("vfr.mp4", 3, 0, (0, 0, 8, 8), 1.0, 0.5)["offset"] == 0.5


def test_both_decoders_turn_frames_as_the_rotation_metadata_says(tmp_path):
    write_video(tmp_path / "rot.mp4", TIMES[:3], rotation=90)
    by_cv, by_av = read_all(VideoFrames(tmp_path / "rot.mp4")), read_all(AvFrames(tmp_path / "rot.mp4"))
    for (_, _, a), (_, _, b) in zip(by_cv, by_av):
        assert a.shape == b.shape == (SIZE[0], SIZE[1], 3)  # portrait: turned a quarter counter-clockwise
        assert a[-8:, :8].mean() > 200 and a[:8, :8].mean() < 100  # the top-left block is now bottom left
        assert np.abs(a.astype(int) - b).mean() < 3


def test_pyav_reads_what_opencv_cannot_open_and_the_page_reads_it_the_same_way(tmp_path, monkeypatch):
    written = write_video(tmp_path / "clip.mp4", TIMES)

    class Closed:  # OpenCV failing to open the file, as it does for codecs its FFmpeg lacks
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

    monkeypatch.setattr(cv2, "VideoCapture", Closed)
    reader = open_video(tmp_path / "clip.mp4")
    assert isinstance(reader, AvFrames) and reader.decoder == "pyav"
    reader.close()
    state = SourceState("video", "hog", None, 1, None, 10.0, None, None, "pyav")
    page = FrameReader(tmp_path, {"clip.mp4": state})
    assert np.abs(page.frame({"source": "clip.mp4", "frame": 5}).astype(int) - written[5]).mean() < 8
    with pytest.raises(DataError, match="no frame 40"):
        page.frame({"source": "clip.mp4", "frame": 40})
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(DataError, match=r"notes.mp4: PyAV cannot read it \(.*\), nor can OpenCV") as err:
        open_video(tmp_path / "notes.mp4")
    assert "\n" not in str(err.value)


def test_a_broken_source_is_one_line_and_a_non_zero_exit_and_the_others_are_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "good.mp4", TIMES)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("a text file, not a video")
    good = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[:len(good) // 3])  # a download that stopped
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    argv = ["-q", "index", "build", "--checkpoint", str(checkpoint), "--detector", "hog", "--det-threshold", "-5",
            "--out", str(tmp_path / "idx"), *DEVICE, "--video", "good.mp4", "empty.mp4", "notes.mp4", "cut.mp4"]
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and err.startswith("cpcl index: error: ")
    assert "could not be read to the end" in err and "empty.mp4" in err and "notes.mp4" in err
    store = IndexStore.open(tmp_path / "idx")
    records = store.read_records()
    assert {r["source"] for r in records} <= {"good.mp4", "cut.mp4"} and "good.mp4" in store.manifest.sources
    assert store.manifest.sources["good.mp4"]["complete"] and store.manifest.complete
    assert "persons embedded from" in out  # what did read is reported
    listed = {json.loads(line)["path"] for line in (tmp_path / "idx" / "unreadable.jsonl").read_text().splitlines()}
    assert {"empty.mp4", "notes.mp4"} <= listed
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "a person", "-k", "1", *DEVICE]) == 0


def test_a_build_whose_only_sources_are_broken_says_why_no_person_was_embedded(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    capsys.readouterr()
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--detector", "hog", "--out",
                 str(tmp_path / "idx"), *DEVICE, "--video", "empty.mp4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err == (f"cpcl index: error: no person was embedded from empty.mp4: no frame could be read "
                   f"({tmp_path / 'empty.mp4'}: an empty file, not a video)")
    listed = [json.loads(line)["path"] for line in (tmp_path / "idx" / "unreadable.jsonl").read_text().splitlines()]
    assert listed == ["empty.mp4"] and IndexStore.open(tmp_path / "idx").manifest.complete
