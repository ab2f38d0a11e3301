"""Video files (issue 22 item 5) on clips the tests write themselves with PyAV (mp4 / H.264, webm / VP9, mov /
MPEG-4 part 2): what is read, what is written (an H.264 mp4 in yuv420p with its index at the front, which browsers
play), the detections per processed frame, the stride rule, and one line for every bad clip."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from vtdemo import live, pipeline, video  # noqa: E402
from vtdemo.video import VideoError, VideoLimits  # noqa: E402


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "libx264") -> Path:
    """A clip of RGB frames (all one even size), written with PyAV directly (not with our writer)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _moving(photo: np.ndarray, n: int) -> list[np.ndarray]:
    return [np.roll(photo, 8 * i, axis=1) for i in range(n)]


@pytest.fixture(scope="module")
def street(photos) -> np.ndarray:
    """The astronaut photo at 320x240 (even sides)."""
    return np.asarray(photos["astronaut"].resize((320, 240)))


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".mov", "mpeg4")])
def test_the_three_containers_are_read_frame_by_frame(tmp_path, street, suffix, codec):
    clip = write_clip(tmp_path / f"clip{suffix}", _moving(street, 12), fps=10, codec=codec)
    info = video.probe(clip, VideoLimits())
    assert (info.width, info.height, info.fps, info.frames) == (320, 240, 10.0, 12)
    assert info.seconds == pytest.approx(1.2, abs=0.11)
    read = list(video.frames(clip, VideoLimits()))
    assert [i for i, _, _ in read] == list(range(12))
    assert [round(t, 2) for _, t, _ in read] == [round(i / 10, 2) for i in range(12)]
    # lossy codecs: the frame read is the frame written, up to compression noise
    assert np.abs(read[5][2].astype(int) - _moving(street, 12)[5].astype(int)).mean() < 12


def test_the_annotated_video_is_h264_yuv420p_with_its_index_first_and_every_frame_kept(detr, tmp_path, street):
    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 9))
    loaded = detr
    out = tmp_path / "out.mp4"
    result = pipeline.detect_video(clip, loaded, out, 0.5, 256, stride=4)
    with av.open(str(out)) as written:
        stream = written.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        assert float(stream.average_rate) == 10.0
        assert sum(1 for _ in written.decode(stream)) == 9
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # '+faststart': a browser plays it before it has it all
    assert (result.frames, result.stride, result.processed) == (9, 4, 3)
    assert [f["frame"] for f in result.per_frame] == [0, 4, 8]
    # each processed frame's detections are the webcam path's on that frame (the clip's aspect ratio)
    frame4 = dict((i, rgb) for i, _, rgb in video.frames(clip, VideoLimits()))[4]
    expected = live.detect_frame(loaded, frame4, 256, 0.5, aspect=320 / 240)
    got = result.per_frame[1]["detections"]
    assert [d["label"] for d in got] == [d.label for d in expected]
    assert np.allclose([d["box"] for d in got], [d.box for d in expected], atol=0.1)


def test_another_threshold_redraws_the_clip_as_a_run_at_that_threshold_would_without_the_model(detr, tmp_path, street):
    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 7))
    first = pipeline.detect_video(clip, detr, tmp_path / "at07.mp4", 0.7, 256, stride=3)
    direct = pipeline.detect_video(clip, detr, tmp_path / "at02.mp4", 0.2, 256, stride=3)
    calls = []
    real = detr.model.forward
    with pytest.MonkeyPatch.context() as mp:  # the redraw must not run the model
        mp.setattr(detr.model, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
        again = pipeline.redraw_video(clip, first.kept, 0.2, tmp_path / "redrawn.mp4")
    assert calls == []
    assert [f["frame"] for f in again] == [0, 3, 6]
    assert again == direct.per_frame  # the same JSON as running the model at 0.2
    assert sum(len(f["detections"]) for f in again) > sum(len(f["detections"]) for f in first.per_frame)
    with av.open(str(tmp_path / "redrawn.mp4")) as a, av.open(str(tmp_path / "at02.mp4")) as b:
        fa = [f.to_ndarray(format="rgb24") for f in a.decode(a.streams.video[0])]
        fb = [f.to_ndarray(format="rgb24") for f in b.decode(b.streams.video[0])]
    assert len(fa) == len(fb) == 7
    assert max(float(np.abs(x.astype(int) - y.astype(int)).mean()) for x, y in zip(fa, fb, strict=True)) < 1.0
    # and back up: at 1.0 nothing is drawn (DETR's scores are below 1), each frame is the plain frame
    assert all(f["detections"] == [] for f in pipeline.redraw_video(clip, first.kept, 1.0, tmp_path / "none.mp4"))


def test_a_large_clip_is_drawn_at_1280_and_its_boxes_are_given_in_the_original_pixels(detr, tmp_path, photos):
    big = np.asarray(photos["astronaut"].resize((1920, 1080)))
    clip = write_clip(tmp_path / "hd.mp4", [big, big])
    loaded = detr
    result = pipeline.detect_video(clip, loaded, tmp_path / "out.mp4", 0.3, 256, stride=1)
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert (written.streams.video[0].codec_context.width, written.streams.video[0].codec_context.height) == (
            1280,
            720,
        )
    small = next(rgb for _, _, rgb in video.frames(clip, VideoLimits(), max_side=1280))
    assert small.shape == (720, 1280, 3)
    expected = live.detect_frame(loaded, small, 256, 0.3, aspect=1920 / 1080)
    assert expected, "the tiny DETR finds something at 0.3"
    got = [d["box"] for d in result.per_frame[0]["detections"]]
    assert np.allclose(got, [[v * 1.5 for v in d.box] for d in expected], atol=0.1)  # 1920 / 1280


def test_the_stride_keeps_a_clip_within_its_time_budget():
    assert video.stride_for(300, 0.5, 0.0, 60.0) == 3  # 150 s of model time -> every 3rd frame: 50 s
    assert video.stride_for(100, 0.5, 0.0, 60.0) == 1  # 50 s: every frame
    assert video.stride_for(1500, 2.0, 0.0, 60.0) == 50
    # every frame is decoded, drawn and encoded anyway: 300 x 0.1 s = 30 s of the 60; the model gets 30 s
    assert video.stride_for(300, 0.5, 0.1, 60.0) == 5  # 60 x 0.5 = 30 s
    assert video.stride_for(300, 0.5, 0.25, 60.0) == 300  # the frames alone take the budget: the model runs once
    assert video.stride_for(10, 0.0, 0.0, 60.0) == 1
    words = [video.every(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111)]
    assert words == [
        "every frame",
        "every 2nd frame",
        "every 3rd frame",
        "every 4th frame",
        "every 11th frame",
        "every 12th frame",
        "every 13th frame",
        "every 21st frame",
        "every 22nd frame",
        "every 23rd frame",
        "every 101st frame",
        "every 111th frame",
    ]


def test_the_stride_is_chosen_from_the_measured_time_per_frame(detr, tmp_path, street, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 20))
    loaded = detr
    asked = []
    monkeypatch.setattr(video, "stride_for", lambda *args: asked.append(args) or 6)
    result = pipeline.detect_video(clip, loaded, tmp_path / "out.mp4", 0.5, 256, budget_s=1.0)
    assert [f["frame"] for f in result.per_frame] == [0, 1, 6, 12, 18]  # the first two timed, then every 6th
    assert result.frames == 20
    ((frames, model_s, other_s, budget_s),) = asked
    assert frames == 18 and model_s > 0 and other_s > 0 and budget_s < 1.0  # frame 1's times; the budget left


# ------------------------------------------------------------------------------------------------ bad clips


def _refused(path: Path, limits: VideoLimits | None = None) -> str:
    with pytest.raises(VideoError) as refused:
        video.probe(path, limits or VideoLimits(), name=path.name)
    text = str(refused.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_text_file_named_mp4_and_a_photo_named_mp4_are_not_videos(tmp_path, photos):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    assert _refused(text).startswith("notes.mp4 could not be read as a video (")
    named = tmp_path / "cat.mp4"
    photos["chelsea"].save(named, format="PNG")  # FFmpeg would read it as a one-frame 'video'
    assert _refused(named) == "cat.mp4 is a photo (png), not a video: open it as a photo"


def test_an_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    assert _refused(path) == "song.mp4 has no video stream (it holds audio): use a video clip"


def test_a_clip_without_frames_is_refused(tmp_path):
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    assert _refused(path) == "empty.mp4 has no video stream (it is empty): use a video clip"


def test_an_8k_clip_is_refused_from_its_header(tmp_path, monkeypatch):
    decoded = []
    monkeypatch.setattr(av.VideoFrame, "to_ndarray", lambda self, **kw: decoded.append(1))
    path = write_clip(tmp_path / "8k.mp4", [np.zeros((4320, 7680, 3), np.uint8)], fps=1)
    assert _refused(path) == "8k.mp4 is 7680x4320: this server takes videos up to 3840x2160"
    with pytest.raises(VideoError):
        list(video.frames(path, VideoLimits()))
    assert decoded == []  # not one frame decoded


def test_a_three_hour_clip_is_refused_from_its_header(tmp_path):
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for pts in (0, 3 * 3600 * 1000):  # two frames, three hours apart
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert _refused(path) == "long.mp4 lasts 3 h 0 min: this server takes clips up to 1 min"


def test_a_truncated_clip_gives_the_frames_before_the_damage(tmp_path, street):
    clip = write_clip(tmp_path / "clip.mkv", _moving(street, 30))  # Matroska: readable from its start
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 3 // 4])
    read = [i for i, _, _ in video.frames(cut, VideoLimits(), name="cut.mkv")]
    assert 0 < len(read) < 30 and read == list(range(len(read)))


def test_limits_are_settings(tmp_path, street):
    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 30), fps=10)  # 3 s, 320x240
    assert _refused(clip, VideoLimits(max_seconds=2)) == "clip.mp4 lasts 3 s: this server takes clips up to 2 s"
    assert _refused(clip, VideoLimits(max_side=256)) == "clip.mp4 is 320x240: this server takes videos up to 256x144"


def test_at_least_one_frame_per_second_of_video_and_the_progress_says_how_long(detr, tmp_path, street, monkeypatch):
    """When decoding and encoding alone overrun the budget, DETR still runs once per second of video (here 10 frames
    at 10 frames/s), and the progress line gives the expected time of the whole clip."""
    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 25), fps=10)
    monkeypatch.setattr(video, "stride_for", lambda *args: 1000)  # 'the model once': the budget is overrun
    heard: list[str] = []
    result = pipeline.detect_video(
        clip, detr, tmp_path / "out.mp4", 0.5, 256, budget_s=0.1, progress=lambda f, text: heard.append(text)
    )
    assert result.stride == 10 and [f["frame"] for f in result.per_frame] == [0, 1, 10, 20]
    assert result.expected_s > 0
    assert heard[-1].startswith("Frame 25 of 25 (DETR on every 10th frame; about ") and heard[-1].endswith(" in all)")
    assert heard[0] == "Frame 1 of 25 (DETR on every frame)"  # before the stride is known


def test_a_thin_clip_keeps_detrs_input_bounded(detr, tmp_path):
    """A 3840x2 clip (within the size limits) would make a 480 x 921600 canvas at its own aspect ratio: the canvas's
    long side stays within DETR's 1333 px, and the clip is processed."""
    path = tmp_path / "thin.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 3840, 2, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((2, 3840, 3), 50 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert live.canvas(480, 3840 / 2) == (480, 1333) and live.canvas(480, 2 / 3840) == (1333, 480)
    result = pipeline.detect_video(path, detr, tmp_path / "out.mp4", 0.5, 480, stride=1)
    assert result.frames == 3 and result.processed == 3


@pytest.mark.slow  # the tiny RT-DETR is written with transformers (its import: ~10 s)
def test_an_rtdetr_clip_runs_each_processed_frame_as_a_photo(rtdetr, tmp_path, street):
    """RT-DETR on a clip (issue 23 item 3): each processed frame's detections are RT-DETR's on that frame as a photo
    (its processor's fixed size; the DETR short side does not apply), and the progress names RT-DETR."""
    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 6))
    heard: list[str] = []
    result = pipeline.detect_video(
        clip, rtdetr, tmp_path / "out.mp4", 0.3, 480, stride=2, progress=lambda _f, text: heard.append(text)
    )
    assert (result.frames, result.processed, result.detector) == (6, 3, "RT-DETR")
    assert heard[-1] == "Frame 6 of 6 (RT-DETR on every 2nd frame)"
    frame2 = dict((i, rgb) for i, _, rgb in video.frames(clip, VideoLimits()))[2]
    expected = pipeline.detect(frame2, rtdetr, threshold=0.3).detections
    got = result.per_frame[1]["detections"]
    assert expected and [d["label"] for d in got] == [d.label for d in expected]
    assert np.allclose([d["box"] for d in got], [d.box for d in expected], atol=0.1)


def test_a_classifier_is_refused_in_one_line(tmp_path, street):
    from vtdemo.errors import VtdemoError

    clip = write_clip(tmp_path / "clip.mp4", _moving(street, 2))
    classifier = type("Loaded", (), {"family": "vit", "id": "timm/some-vit"})()
    with pytest.raises(VtdemoError, match="timm/some-vit is not a detector"):
        pipeline.detect_video(clip, classifier, tmp_path / "out.mp4", 0.5, 256)
