"""The webcam's live map (issue 22 item 4): where the most confident detection looked, from the same call that
detects, over the frame's part of the fixed canvas; RT-DETR on live frames (issue 23 item 3): as on photos, and its
map, the best detection's sampling points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtdemo import live
from vtdemo.explain.detr import decoder_attention


def test_the_map_is_the_best_detections_decoder_attention_over_the_frame(detr, photos):
    frame = np.asarray(photos["astronaut"].resize((640, 360)))  # 16:9 into the 4:3 canvas: padding below
    dets, attention = live.detect_frame_map(detr, frame, 320, 0.3)
    plain = live.detect_frame(detr, frame, 320, 0.3)  # (without attention outputs: another softmax kernel)
    assert [d.label for d in dets] == [d.label for d in plain]
    assert np.allclose([d.box for d in dets], [d.box for d in plain], atol=0.05)
    assert dets and attention is not None
    # the same map computed by hand from a forward pass with attention on the same canvas
    pixel_values, pixel_mask, (w, h) = live.inputs(photos["astronaut"].resize((640, 360)), detr.preprocess, 320)
    with torch.inference_mode():
        out = detr.model(pixel_values, pixel_mask, return_attn=True)
    scores = out.logits[0].softmax(-1)[:, :-1].max(-1).values  # [Q]: DETR's score, the no-object class left out
    assert dets[0].query == int(scores.argmax())  # the most confident query
    full = decoder_attention(out, dets[0].query)
    rows, cols = int(out.feature_mask[0, :, 0].sum()), int(out.feature_mask[0, 0, :].sum())
    assert attention.shape == (rows, cols) and rows < full.shape[0]  # the padding rows are cut off
    torch.testing.assert_close(attention, full[:rows, :cols])


def test_no_detection_no_map(detr, photos, monkeypatch):
    monkeypatch.setattr(live.postprocess, "select", lambda *args, **kwargs: torch.empty(0, dtype=torch.long))
    frame = np.asarray(photos["coffee"].resize((640, 480)))
    dets, attention = live.detect_frame_map(detr, frame, 256, 0.7)
    assert dets == [] and attention is None


@pytest.mark.slow  # the tiny RT-DETR is written with transformers (its import: ~10 s)
def test_rtdetr_frames_run_as_photos_do_at_its_processors_fixed_size(rtdetr, photos):
    """RT-DETR on a live frame is RT-DETR on that frame as a photo (squashed to its processor's size, whatever the
    DETR short side and aspect asked): the same detections as `pipeline.detect`, boxes in the frame's pixels."""
    from vtdemo import pipeline

    frame = np.asarray(photos["astronaut"].resize((640, 360)))
    assert live.input_size(rtdetr, 256) == live.input_size(rtdetr, 480, aspect=16 / 9) == (320, 320)
    dets = live.detect_frame(rtdetr, frame, 256, 0.3)
    photo = pipeline.detect(frame, rtdetr, threshold=0.3).detections
    assert dets and [(d.label, d.query) for d in dets] == [(d.label, d.query) for d in photo]
    assert np.allclose([d.box for d in dets], [d.box for d in photo], atol=0.02)
    assert max(d.box[2] for d in dets) > 320  # the frame's pixels (640 wide), not the 320x320 input's


@pytest.mark.slow  # the tiny RT-DETR is written with transformers (its import: ~10 s)
def test_rtdetrs_live_map_is_the_best_detections_sampling_points(rtdetr, photos):
    """The map switch on RT-DETR: the Detect tab's `rtdetr-sampling` view of the most confident detection (last
    decoder layer, every head and level, splatted on the stride-8 grid over the whole, squashed frame)."""
    from vtdemo import pipeline

    image = photos["astronaut"].resize((640, 360))
    dets, splat = live.detect_frame_map(rtdetr, np.asarray(image), 320, 0.3)
    assert [d.query for d in dets] == [d.query for d in live.detect_frame(rtdetr, np.asarray(image), 320, 0.3)]
    run = pipeline.run_rtdetr(rtdetr, image)
    expected = run.explain("rtdetr-sampling", pipeline.ExplainOptions(query=dets[0].query)).map
    assert splat is not None and splat.shape == (40, 40) == tuple(run.feature_size)
    torch.testing.assert_close(splat / splat.max(), expected.float(), atol=1e-5, rtol=1e-4)  # the view's: max 1


@pytest.mark.slow  # the tiny RT-DETR is written with transformers (its import: ~10 s)
def test_rtdetr_no_detection_no_map(rtdetr, photos, monkeypatch):
    monkeypatch.setattr(live.postprocess, "select", lambda *args, **kwargs: torch.empty(0, dtype=torch.long))
    frame = np.asarray(photos["coffee"].resize((640, 480)))
    dets, splat = live.detect_frame_map(rtdetr, frame, 256, 0.7)
    assert dets == [] and splat is None
