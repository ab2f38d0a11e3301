"""DETR attention maps: backbone-grid shape, sums, row-major placement, point-to-cell mapping with padding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vtdemo.explain import detr as ex
from vtdemo.models.detr import DETR, DetrConfig

TINY = DetrConfig(d_model=32, num_heads=2, encoder_layers=2, decoder_layers=2, ffn_dim=64, num_queries=10)


@pytest.fixture(scope="module")
def padded_output():
    """Two images of different sizes in one padded batch, with attention."""
    torch.manual_seed(0)
    model = DETR(TINY).eval()
    x = torch.randn(2, 3, 160, 224)
    mask = torch.zeros(2, 160, 224, dtype=torch.bool)
    mask[0] = True
    mask[1, :96, :128] = True  # second image: 96x128 real pixels -> 3x4 real cells of the 5x7 grid
    with torch.no_grad():
        return model(x, mask, return_attn=True)


def test_decoder_maps_have_the_grid_shape_and_sum_to_one_per_head(padded_output):
    h, w = padded_output.feature_size
    assert (h, w) == (5, 7)
    for b in range(2):
        for head in (None, 0, 1):
            m = ex.decoder_attention(padded_output, query=3, head=head, batch_index=b)
            assert m.shape == (5, 7)
            assert float(m.sum()) == pytest.approx(1.0, abs=1e-5)
    # the padded image's map is zero on padded cells
    m = ex.decoder_attention(padded_output, query=3, batch_index=1)
    assert float(m[3:].abs().sum() + m[:, 4:].abs().sum()) == 0.0
    layers = ex.decoder_attention_layers(padded_output, query=3)
    assert layers.shape == (2, 5, 7)
    torch.testing.assert_close(layers[-1], ex.decoder_attention(padded_output, query=3))


def test_encoder_row_sums_to_one_and_column_is_the_transpose(padded_output):
    row = ex.encoder_attention(padded_output, (0.5, 0.5), direction="row")
    assert row.shape == (5, 7) and float(row.sum()) == pytest.approx(1.0, abs=1e-5)
    attn = padded_output.encoder_attn[-1][0].mean(0)  # [hw, hw]
    r, c = ex.feature_cell(padded_output, (0.5, 0.5))
    torch.testing.assert_close(
        ex.encoder_attention(padded_output, (0.5, 0.5), direction="column").flatten(), attn[:, r * 7 + c]
    )
    with pytest.raises(ValueError):
        ex.encoder_attention(padded_output, (0.5, 0.5), direction="sideways")


def test_points_map_to_cells_of_the_real_image(padded_output):
    assert ex.feature_cell(padded_output, (0.0, 0.0), 0) == (0, 0)
    assert ex.feature_cell(padded_output, (0.999, 0.999), 0) == (4, 6)
    assert ex.feature_cell(padded_output, (0.999, 0.999), 1) == (2, 3)  # the real 3x4 part, not the padding
    assert ex.feature_cell(padded_output, (0.5, 0.1), 1) == (0, 2)


def test_maps_are_row_major_on_the_grid():
    """A one-hot attention at flat index r*w + c must light cell (r, c)."""
    h, w, Q, nh = 3, 4, 2, 2
    cross = torch.zeros(1, nh, Q, h * w)
    cross[0, :, 1, 2 * w + 1] = 1.0  # query 1 looks only at row 2, col 1
    enc = torch.zeros(1, nh, h * w, h * w)
    enc[0, :, 1 * w + 3, 0] = 1.0  # the cell (1, 3) looks only at (0, 0)
    out = SimpleNamespace(
        feature_size=(h, w),
        feature_mask=torch.ones(1, h, w, dtype=torch.bool),
        decoder_cross_attn=[cross],
        encoder_attn=[enc],
    )
    m = ex.decoder_attention(out, query=1)
    assert m[2, 1] == 1.0 and float(m.sum()) == 1.0
    e = ex.encoder_attention(out, (0.9, 0.4))  # x 0.9 -> col 3, y 0.4 -> row 1
    assert e[0, 0] == 1.0 and float(e.sum()) == 1.0


def test_without_attention_a_clear_error():
    out = SimpleNamespace(feature_size=(2, 2), decoder_cross_attn=None)
    with pytest.raises(ValueError, match="return_attn=True"):
        ex.decoder_attention(out, 0)


def test_float16_storage_keeps_maps_within_display_precision(padded_output):
    """The app stores attention in float16 to halve a session's memory; maps still agree to ~1e-3 of their peak."""
    import copy

    half = copy.copy(padded_output)
    for name in ("encoder_attn", "decoder_self_attn", "decoder_cross_attn"):
        setattr(half, name, [a.half() for a in getattr(padded_output, name)])
    for b in range(2):
        full = ex.decoder_attention(padded_output, 3, batch_index=b)
        torch.testing.assert_close(
            ex.decoder_attention(half, 3, batch_index=b), full, atol=1e-3 * float(full.max()), rtol=0
        )
        for direction in ("row", "column"):
            full = ex.encoder_attention(padded_output, (0.3, 0.6), direction=direction, batch_index=b)
            got = ex.encoder_attention(half, (0.3, 0.6), direction=direction, batch_index=b)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, full, atol=1e-3 * float(full.max()), rtol=0)
