"""The webcam's live map (issue 22 item 4): where the most confident detection looked, from the same call that
detects, over the frame's part of the fixed canvas."""

from __future__ import annotations

import numpy as np
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
