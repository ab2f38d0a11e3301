"""Swin explanations: the window-aware rollout against an explicit dense construction, its properties and small
cases by hand (shift direction, a wrapped window, a merge), "where does this patch look" with its window boxes, and
the class-specific gradient rollout (Chefer et al.) against its own dense construction, with real gradients.

The dense reference below is deliberately written from first principles (loops over windows and tokens with their
own index arithmetic, explicit merge matrices, dense products); the library never builds it. It is itself checked
against the model: with the value and output projections set to the identity and the MLP to zero, a block computes
x + A_dense @ norm1(x), so the reference's placement of windows and shift is the block's own.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch

from vtdemo.explain import swin as ex
from vtdemo.models.swin import SwinAttention, SwinConfig, SwinTransformer

# Grids 16 / 8 / 4 with window 4: shifted blocks (shift 2) in stages 0 and 1, two merges, stage 2 one window.
TINY = SwinConfig(
    img_size=64, patch_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, num_classes=10
)
# Grid 8 with window 4, shift 2 in block 1: the hand-checked case; then grid 4, one window.
SMALL = SwinConfig(
    img_size=32, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4, num_classes=10
)


def _model(cfg: SwinConfig, seed: int = 0) -> SwinTransformer:
    """Random weights at a scale that makes attention visibly non-uniform."""
    torch.manual_seed(seed)
    model = SwinTransformer(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("qkv.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 2 * p.shape[1] ** -0.5)
    return model


def _attentions(cfg: SwinConfig, seed: int = 0) -> list[SwinAttention]:
    model = _model(cfg, seed)
    x = torch.randn(1, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        return model(x, return_attn=True).attentions


@pytest.fixture(scope="module")
def tiny() -> list[SwinAttention]:
    return _attentions(TINY)


@pytest.fixture(scope="module")
def small() -> list[SwinAttention]:
    return _attentions(SMALL)


# ----------------------------------------------------------------------------------------------------------------
# The dense reference.


def image_positions(H: int, W: int, window: int, shift: int) -> list[list[int]]:
    """For each window (row-major over windows of the rolled grid) the flat image positions of its tokens (row-major
    in the window). The block rolls by -shift, so rolled (r, c) holds image ((r + shift) % H, (c + shift) % W)."""
    windows = []
    for w in range(H // window * W // window):
        wr, wc = divmod(w, W // window)
        tokens = []
        for a in range(window * window):
            r, c = wr * window + a // window, wc * window + a % window  # rolled frame
            tokens.append(((r + shift) % H) * W + (c + shift) % W)
        windows.append(tokens)
    return windows


def fuse(attn: torch.Tensor, fusion: str) -> torch.Tensor:
    """[nW, nh, N, N] -> [nW, N, N]."""
    return {"mean": attn.mean(1), "max": attn.amax(1), "min": attn.amin(1)}[fusion]


def discard(A: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the k = int(ratio * N*N) smallest entries of each window [N, N] (by sorting)."""
    out = A.clone()
    for w in range(A.shape[0]):
        flat = out[w].reshape(-1)
        k = int(flat.numel() * ratio)
        flat[flat.argsort()[:k]] = 0
    return out


def dense_attention(
    record: SwinAttention, fusion: str = "mean", ratio: float = 0.0, head: int | None = None
) -> torch.Tensor:
    """The block's fused attention as one [HW, HW] matrix on image positions (no identity, not renormalised)."""
    H, W = record.grid
    attn = record.attn.float()
    A = attn[:, head] if head is not None else fuse(attn, fusion)  # [nW, N, N]
    A = discard(A, ratio) if ratio > 0 else A
    D = torch.zeros(H * W, H * W)
    for w, tokens in enumerate(image_positions(H, W, record.window, record.shift)):
        for a, p in enumerate(tokens):
            for b, q in enumerate(tokens):
                D[p, q] = A[w, a, b]
    return D


def merge_matrix(H: int, W: int) -> torch.Tensor:
    """[(H/2)(W/2), HW]: each coarse token the average of its 2x2 children."""
    M = torch.zeros(H // 2 * W // 2, H * W)
    for i in range(H // 2):
        for j in range(W // 2):
            for di in (0, 1):
                for dj in (0, 1):
                    M[i * (W // 2) + j, (2 * i + di) * W + 2 * j + dj] = 0.25
    return M


def dense_rollout(attentions: list[SwinAttention], fusion: str = "mean", ratio: float = 0.0) -> torch.Tensor:
    """R = A'_L ... M ... A'_1 as dense products, map = row mean, [H1, W1]."""
    H1, W1 = attentions[0].grid
    R = torch.eye(H1 * W1, dtype=torch.float64)
    grid = (H1, W1)
    for record in attentions:
        while grid != record.grid:
            R = merge_matrix(*grid).double() @ R
            grid = (grid[0] // 2, grid[1] // 2)
        A = dense_attention(record, fusion, ratio).double() + torch.eye(R.shape[0], dtype=torch.float64)
        R = (A / A.sum(-1, keepdim=True)) @ R
    return R.mean(0).view(H1, W1).float()


def test_dense_reference_is_what_the_block_computes(tiny):
    """Value and output projections = identity, MLP = 0: a block maps x to x + A @ norm1(x), A the dense matrix."""
    model = _model(TINY)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = model.patch_embed(x)  # [1, 16, 16, C]
        h, _ = model.layers[0].blocks[0](h)
        block = copy.deepcopy(model.layers[0].blocks[1])  # the shifted block, shift 2
        assert block.shift == 2
        C = h.shape[-1]
        block.attn.qkv.weight[2 * C :] = torch.eye(C)
        block.attn.qkv.bias[2 * C :] = 0
        block.attn.proj.weight.copy_(torch.eye(C))
        block.attn.proj.bias.zero_()
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.zero_()
        out, attn = block(h, return_attn=True)
        record = SwinAttention(attn, 0, 1, block.grid, block.window, block.shift)
        y = block.norm1(h).reshape(-1, C)  # [HW, C]
        nh = attn.shape[1]
        hd = C // nh
        for head in range(nh):
            cols = slice(head * hd, (head + 1) * hd)
            expected = dense_attention(record, head=head) @ y[:, cols]  # [HW, hd]
            torch.testing.assert_close((out - h).reshape(-1, C)[:, cols], expected, atol=1e-5, rtol=1e-4)
        # the same attention is what the full model recorded for that block (same weights before the edit)
        torch.testing.assert_close(attn, tiny[1].attn)


# ----------------------------------------------------------------------------------------------------------------
# Rollout.


@pytest.mark.parametrize("fusion", ex.FUSIONS)
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_rollout_equals_dense_reference(tiny, fusion, ratio):
    assert [r.shift for r in tiny] == [0, 2, 0, 2, 0, 0] and [r.grid[0] for r in tiny] == [16, 16, 8, 8, 4, 4]
    m = ex.rollout(tiny, head_fusion=fusion, discard_ratio=ratio)
    assert m.shape == (16, 16)
    torch.testing.assert_close(m, dense_rollout(tiny, fusion, ratio), atol=1e-6, rtol=1e-5)
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(), torch.tensor(1.0))


def test_rollout_of_small_model_equals_dense_reference(small):
    torch.testing.assert_close(ex.rollout(small), dense_rollout(small), atol=1e-6, rtol=1e-5)


def test_rollout_map_is_not_trivial(tiny):
    m = ex.rollout(tiny)
    assert float(m.max() / m.min()) > 1.2  # random attention must leave a visibly non-uniform map


def _synthetic(grid: int, window: int, shift: int, attn: torch.Tensor, stage: int = 0, block: int = 0) -> SwinAttention:
    return SwinAttention(attn, stage, block, (grid, grid), window, shift)


def test_uniform_attention_gives_uniform_map():
    """Uniform in every window: A' = (J/N + I)/2 is doubly stochastic, so the uniform readout stays uniform."""
    records = [_synthetic(8, 4, s, torch.full((4, 2, 16, 16), 1 / 16), 0, b) for b, s in enumerate((0, 2))]
    records += [_synthetic(4, 4, 0, torch.full((1, 2, 16, 16), 1 / 16), 1, 0)]
    torch.testing.assert_close(ex.rollout(records), torch.full((8, 8), 1 / 64))


def test_uniform_attention_inside_the_shift_mask_gives_uniform_map(small):
    """Uniform over what the mask allows: still symmetric, hence doubly stochastic: uniform map."""
    shifted = small[1]
    allowed = (shifted.attn[:, :1] > 0).float()  # [nW, 1, N, N]: the real model's mask support
    uniform = allowed / allowed.sum(-1, keepdim=True)
    records = [_synthetic(8, 4, 0, torch.full((4, 1, 16, 16), 1 / 16)), _synthetic(8, 4, 2, uniform, 0, 1)]
    torch.testing.assert_close(ex.rollout(records), torch.full((8, 8), 1 / 64))


def test_identity_attention_gives_uniform_map():
    """A = I: A' = I, so R is the product of the merge matrices; every final token averages its own stage-1 tokens,
    and the mean over final tokens weighs every stage-1 token alike: the map is uniform, 1/N1 (no preference)."""
    eye = torch.eye(16).expand(4, 2, 16, 16)
    records = [
        _synthetic(8, 4, 0, eye),
        _synthetic(8, 4, 2, eye, 0, 1),
        _synthetic(4, 4, 0, torch.eye(16).expand(1, 2, 16, 16), 1, 0),
    ]
    torch.testing.assert_close(ex.rollout(records), torch.full((8, 8), 1 / 64))
    torch.testing.assert_close(dense_rollout(records), torch.full((8, 8), 1 / 64))


def _all_look_at_first(nW: int, window: int, which: int) -> torch.Tensor:
    """[nW, 1, N, N]: identity in every window but `which`, where every row attends to the window's token 0."""
    N = window * window
    attn = torch.eye(N).repeat(nW, 1, 1, 1)  # [nW, 1, N, N]
    attn[which, 0] = 0
    attn[which, 0, :, 0] = 1
    return attn


def test_by_hand_unshifted():
    """4x4 grid, window 2: window 0 all look at image (0, 0). Readout 1/16 each: (0, 0) keeps 1/16 and gets half
    of the 1/16 of each of 3 others: 5/32; those 3 keep 1/32; the rest 1/16."""
    m = ex.rollout([_synthetic(4, 2, 0, _all_look_at_first(4, 2, 0))])
    expected = torch.full((4, 4), 1 / 16)
    expected[:2, :2] = 1 / 32
    expected[0, 0] = 5 / 32
    torch.testing.assert_close(m, expected)


def test_by_hand_shift_direction():
    """Same with shift 1: the block rolls by -1, so window 0 holds image rows/cols {1, 2}, its token 0 image (1, 1)."""
    m = ex.rollout([_synthetic(4, 2, 1, _all_look_at_first(4, 2, 0))])
    expected = torch.full((4, 4), 1 / 16)
    expected[1:3, 1:3] = 1 / 32
    expected[1, 1] = 5 / 32
    torch.testing.assert_close(m, expected)


def test_by_hand_wrapped_window():
    """Shift 1, the last window (rolled rows/cols {2, 3}) holds image rows/cols {3, 0}: it wraps; its token 0 is
    rolled (2, 2) = image (3, 3)."""
    m = ex.rollout([_synthetic(4, 2, 1, _all_look_at_first(4, 2, 3))])
    expected = torch.full((4, 4), 1 / 16)
    for r in (3, 0):
        for c in (3, 0):
            expected[r, c] = 1 / 32
    expected[3, 3] = 5 / 32
    torch.testing.assert_close(m, expected)


def test_by_hand_merge():
    """Stage 0: 4x4, one window, identity. Stage 1: 2x2, one window, all look at coarse (0, 0): it gets
    1/4 + 3 * 1/8 = 5/8, the others 1/8; a merge splits each equally over its 4 children: 5/32 and 1/32."""
    records = [
        _synthetic(4, 4, 0, torch.eye(16).expand(1, 1, 16, 16)),
        _synthetic(2, 2, 0, _all_look_at_first(1, 2, 0), 1, 0),
    ]
    expected = torch.full((4, 4), 1 / 32)
    expected[:2, :2] = 5 / 32
    torch.testing.assert_close(ex.rollout(records), expected)


def test_discard_is_per_window():
    A = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1
    out = ex.discard_lowest_per_window(A, 0.5)
    assert [int((out[w] == 0).sum()) for w in range(3)] == [8, 8, 8]
    kept = out > 0
    assert torch.equal(out[kept], A[kept])
    for w in range(3):  # every kept entry is at least every dropped one, window by window
        assert A[w][kept[w]].min() >= A[w][~kept[w]].max()
    assert ex.discard_lowest_per_window(A, 0.0) is A
    with pytest.raises(ValueError):
        ex.discard_lowest_per_window(A, 1.0)


def test_head_fusion_changes_only_what_it_should(tiny):
    same = [
        SwinAttention(r.attn[:, :1].expand_as(r.attn), r.stage, r.block, r.grid, r.window, r.shift) for r in tiny
    ]  # every head equal to head 0: the fusion must not matter
    maps = [ex.rollout(same, f) for f in ex.FUSIONS]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0])
    assert not torch.allclose(ex.rollout(tiny, "max"), ex.rollout(tiny, "mean"))


def test_rollout_refuses_bad_input(tiny):
    with pytest.raises(ValueError):
        ex.rollout([])
    with pytest.raises(ValueError):
        ex.rollout(tiny[::-1])
    batch2 = SwinAttention(torch.cat([tiny[0].attn] * 2), 0, 0, tiny[0].grid, tiny[0].window, tiny[0].shift)
    with pytest.raises(ValueError, match="batch of one"):
        ex.rollout([batch2])
    with pytest.raises(ValueError):
        ex.rollout(tiny, head_fusion="median")


# ----------------------------------------------------------------------------------------------------------------
# Where does this patch look.


def _center(row: int, col: int, grid: int) -> tuple[float, float]:
    """(x, y) fractions at the centre of token (row, col)."""
    return ((col + 0.5) / grid, (row + 0.5) / grid)


def test_window_attention_is_a_row_of_the_dense_matrix(tiny):
    g = torch.Generator().manual_seed(3)
    for b, record in enumerate(tiny):
        H, W = record.grid
        dense = dense_attention(record)
        for _ in range(5):
            r, c = (int(v) for v in torch.randint(0, H, (2,), generator=g))
            m = ex.window_attention_at(tiny, _center(r, c, H), block=b)
            assert m.shape == (H, W)
            torch.testing.assert_close(m.reshape(-1), dense[r * W + c])
            torch.testing.assert_close(m.sum(), torch.tensor(1.0))
            for head in range(record.attn.shape[1]):
                mh = ex.window_attention_at(tiny, _center(r, c, H), block=b, head=head)
                torch.testing.assert_close(mh.reshape(-1), dense_attention(record, head=head)[r * W + c])
                torch.testing.assert_close(mh.sum(), torch.tensor(1.0))


def test_shifted_window_by_hand():
    """8x8, window 4, shift 2: image row 0 is rolled row 6, in the rolled window rows 4..7 = image rows
    6, 7, 0, 1; so token (0, 0) shares its window with rows and cols {0, 1, 6, 7} (the four 2x2 corners)."""
    uniform = torch.full((4, 1, 16, 16), 1 / 16)
    records = [_synthetic(8, 4, 0, uniform), _synthetic(8, 4, 2, uniform, 0, 1)]
    m = ex.window_attention_at(records, (0.0, 0.0), block=1)
    expected = torch.zeros(8, 8)
    for r in (0, 1, 6, 7):
        for c in (0, 1, 6, 7):
            expected[r, c] = 1 / 16
    torch.testing.assert_close(m, expected)
    # unshifted block: the top-left 4x4 window
    expected = torch.zeros(8, 8)
    expected[:4, :4] = 1 / 16
    torch.testing.assert_close(ex.window_attention_at(records, (0.0, 0.0), block=0), expected)
    # shifted block, token (3, 3): rolled (1, 1), window 0 = image rows/cols 2..5, no wrap
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1 / 16
    torch.testing.assert_close(ex.window_attention_at(records, _center(3, 3, 8), block=1), expected)


def test_real_model_looks_only_where_the_mask_allows(small):
    """The shift mask confines token (0, 0) of the shifted block to its own corner: rows/cols {0, 1}."""
    m = ex.window_attention_at(small, (0.0, 0.0), block=1)
    support = m > 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(support, expected)
    torch.testing.assert_close(m.sum(), torch.tensor(1.0))


def _box_cells(boxes: list[tuple[float, float, float, float]], grid: int) -> torch.Tensor:
    cells = torch.zeros(grid, grid, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        cells[round(y0 * grid) : round(y1 * grid), round(x0 * grid) : round(x1 * grid)] = True
    return cells


def test_window_box_by_hand(small):
    assert ex.window_box(small, (0.0, 0.0), block=0) == [(0.0, 0.0, 0.5, 0.5)]
    corners = ex.window_box(small, (0.0, 0.0), block=1)
    assert sorted(corners) == sorted(
        [(0.0, 0.0, 0.25, 0.25), (0.75, 0.0, 1.0, 0.25), (0.0, 0.75, 0.25, 1.0), (0.75, 0.75, 1.0, 1.0)]
    )
    assert ex.window_box(small, (0.0, 0.0), block=1, reachable=True) == [(0.0, 0.0, 0.25, 0.25)]
    # token (0, 3): rows {6, 7, 0, 1} wrap, cols 2..5 do not: two boxes
    assert sorted(ex.window_box(small, _center(0, 3, 8), block=1)) == [(0.25, 0.0, 0.75, 0.25), (0.25, 0.75, 0.75, 1.0)]
    assert ex.window_box(small, _center(3, 3, 8), block=1) == [(0.25, 0.25, 0.75, 0.75)]
    assert ex.window_box(small, (0.5, 0.5), block=2) == [(0.0, 0.0, 1.0, 1.0)]  # stage 1: one window


def test_window_box_outlines_the_support(small, tiny):
    """For every token of every block: the window boxes cover its window, the reachable box is exactly where a
    real model's attention is non-zero."""
    for records in (small, tiny):
        uniform = [
            SwinAttention(torch.ones_like(x.attn) / x.attn.shape[-1], x.stage, x.block, x.grid, x.window, x.shift)
            for x in records
        ]
        for b, record in enumerate(records):
            H = record.grid[0]
            for r in range(H):
                for c in range(H):
                    p = _center(r, c, H)
                    window = ex.window_attention_at(uniform, p, block=b) > 0
                    assert torch.equal(_box_cells(ex.window_box(records, p, block=b), H), window)
                    reach = ex.window_attention_at(records, p, block=b) > 0
                    assert torch.equal(_box_cells(ex.window_box(records, p, block=b, reachable=True), H), reach)
                    assert len(ex.window_box(records, p, block=b, reachable=True)) == 1


def test_default_block(tiny, small):
    assert ex.default_block(tiny) == 3  # last block of stage 1 (8x8 grid, 4 windows); stage 2 is one window
    assert ex.default_block(small) == 1
    torch.testing.assert_close(
        ex.window_attention_at(tiny, (0.3, 0.6)), ex.window_attention_at(tiny, (0.3, 0.6), block=3)
    )
    assert ex.window_attention_at(tiny, (0.3, 0.6), block=-1).shape == (4, 4)  # -1: the last block
    with pytest.raises(ValueError):
        ex.window_attention_at(tiny, (0.3, 0.6), block=6)
    with pytest.raises(ValueError):
        ex.window_attention_at(tiny, (0.3, 0.6), block=0, head=1)  # stage 0 has one head


def test_points_on_the_far_edge_stay_on_the_grid(tiny):
    m = ex.window_attention_at(tiny, (1.0, 1.0), block=0)
    assert m[-1, -1] > 0
    torch.testing.assert_close(m.sum(), torch.tensor(1.0))


# ----------------------------------------------------------------------------------------------------------------
# Full size.


@pytest.mark.slow
def test_swin_t_rollout_full_size():
    cfg = SwinConfig()  # Swin-T 224
    torch.manual_seed(0)
    model = SwinTransformer(cfg).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        attns = model(x, return_attn=True).attentions
        t0 = time.perf_counter()
        m = ex.rollout(attns)
        elapsed = time.perf_counter() - t0
    assert m.shape == (56, 56) and torch.isfinite(m).all() and (m >= 0).all()
    torch.testing.assert_close(m.sum(), torch.tensor(1.0))
    assert ex.default_block(attns) == 9  # stage 3 of 4, its last block (14x14 grid, 7x7 windows)
    assert ex.window_attention_at(attns, (0.5, 0.5)).shape == (14, 14)
    assert elapsed < 5.0  # not a timing test (see `python -m vtdemo bench --only swin-explain`): only "not dense"


# ----------------------------------------------------------------------------------------------------------------
# Class-specific relevance (Chefer et al. 2021) through windows and merges.


def dense_grad_rollout(
    attentions: list[SwinAttention], gradients: list[torch.Tensor], identity_path: bool = True
) -> torch.Tensor:
    """Chefer's R = I; R <- M R at a merge; R <- R + Abar R per block, with Abar the dense [HW, HW] placement of
    mean_heads((grad * attn).clamp(min=0)); map = row mean of R, [H1, W1]. Dense products, as the library never does.
    Without the identity path: the row mean of R - R0, R0 the same product with every Abar = 0 (merges only)."""
    H1, W1 = attentions[0].grid
    R = torch.eye(H1 * W1, dtype=torch.float64)
    R0 = R.clone()
    grid = (H1, W1)
    for record, grad in zip(attentions, gradients, strict=True):
        while grid != record.grid:
            M = merge_matrix(*grid).double()
            R, R0 = M @ R, M @ R0
            grid = (grid[0] // 2, grid[1] // 2)
        weighted = (grad.double() * record.attn.double()).clamp(min=0)  # [nW, nh, N, N]
        Abar = dense_attention(
            SwinAttention(weighted, record.stage, record.block, record.grid, record.window, record.shift)
        ).double()  # [HW, HW]: head mean, windows placed
        R = R + Abar @ R
    return (R if identity_path else R - R0).mean(0).view(H1, W1).float()


def _tiny_input() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # as `_attentions(TINY)`


@pytest.fixture(scope="module")
def tiny_model() -> SwinTransformer:
    return _model(TINY)


@pytest.mark.slow
def test_grad_rollout_equals_dense_reference(tiny_model):
    x = _tiny_input()
    for c in (0, 3, 7):
        _, records, grads = ex.class_gradients(tiny_model, x, c)
        assert [r.shift for r in records] == [0, 2, 0, 2, 0, 0]  # shifted blocks and two merges
        assert [r.grid[0] for r in records] == [16, 16, 8, 8, 4, 4]
        full = ex.grad_rollout(records, grads, identity_path=True)
        assert full.shape == (16, 16)
        dense = dense_grad_rollout(records, grads)
        torch.testing.assert_close(full, dense, atol=1e-6, rtol=1e-5)
        assert float(full.sum()) > 1.0  # not renormalised
        # the path crossing no attention puts exactly 1/N1 everywhere; the default map is the rest
        zero = [torch.zeros_like(g) for g in grads]
        torch.testing.assert_close(dense_grad_rollout(records, zero), torch.full((16, 16), 1 / 256))
        m = ex.grad_rollout(records, grads)
        torch.testing.assert_close(m, dense_grad_rollout(records, grads, identity_path=False), atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(m, full - 1 / 256, atol=1e-7, rtol=0)
        assert (m >= 0).all() and float(m.max()) > 0.2 / 256 and float(m.max() / m.mean()) > 1.2


def test_class_gradients_pair_each_block_with_its_own_gradient(tiny_model, tiny):
    x = _tiny_input()
    logits, records, grads = ex.class_gradients(tiny_model, x, class_index=4)
    assert all(p.grad is None for p in tiny_model.parameters())  # nothing accumulated on (unfrozen) weights
    # independent computation with torch.autograd.grad on a fresh forward pass
    out = tiny_model(x.clone().requires_grad_(True), return_attn=True)
    expected = torch.autograd.grad(out.logits[0, 4], [r.attn for r in out.attentions])
    assert len(records) == len(grads) == len(expected) == 6
    for got, want, rec, fresh, cached in zip(grads, expected, records, out.attentions, tiny, strict=True):
        assert got.shape == rec.attn.shape == fresh.attn.shape  # [nW, nh, N, N]: the window dim is kept
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(rec.attn, fresh.attn.detach())
        torch.testing.assert_close(rec.attn, cached.attn)  # the same attention as the plain forward records
        assert not rec.attn.requires_grad and not got.requires_grad
        assert (rec.stage, rec.block, rec.grid, rec.window, rec.shift) == (
            cached.stage,
            cached.block,
            cached.grid,
            cached.window,
            cached.shift,
        )
    # the shift mask: blocked entries have zero attention, so they carry no relevance whatever their gradient
    blocked = records[1].attn == 0
    assert blocked.any() and (ex.window_grad_factors(records[1], grads[1])[blocked[:, 0]] == 0).all()
    torch.testing.assert_close(logits, out.logits[0].detach())
    # the pairing matters: the same gradients shifted by one block give another map (where the shapes allow it)
    swapped = [grads[1], grads[0], grads[3], grads[2], grads[5], grads[4]]
    assert not torch.allclose(ex.grad_rollout(records, grads), ex.grad_rollout(records, swapped))


def test_grad_rollout_depends_on_the_class(tiny_model):
    x = _tiny_input()
    maps = [ex.grad_rollout(*ex.class_gradients(tiny_model, x, c)[1:]) for c in (1, 4)]
    assert not torch.allclose(maps[0], maps[1], atol=1e-6, rtol=1e-3)


def test_grad_rollout_clamps_negative_evidence(tiny_model):
    x = _tiny_input()
    _, records, grads = ex.class_gradients(tiny_model, x, 2)
    # (grad * attn).clamp(min=0) = grad.clamp(min=0) * attn (attention >= 0): the negative part of a block's
    # gradient does exactly what a zero gradient does
    for k in (1, 4):
        negative_only = list(grads)
        negative_only[k] = grads[k].clamp(max=0)
        zero = list(grads)
        zero[k] = torch.zeros_like(grads[k])
        torch.testing.assert_close(ex.grad_rollout(records, negative_only), ex.grad_rollout(records, zero))
        assert not torch.allclose(ex.grad_rollout(records, negative_only), ex.grad_rollout(records, grads))
    # all gradients negated where they were positive: nothing is left but the identity path (uniform 1/N1)
    flipped = [-g.abs() for g in grads]
    assert torch.equal(ex.grad_rollout(records, flipped), torch.zeros(16, 16))
    torch.testing.assert_close(ex.grad_rollout(records, flipped, identity_path=True), torch.full((16, 16), 1 / 256))


def test_grad_rollout_by_hand():
    """4x4 grid, window 2, one head: window 0's tokens all attend its token 0, gradient 1 there and 0 elsewhere.
    Readout 1/16 each; I + Abar (not renormalised): token 0 keeps 1/16 and gets 4 * 1/16: 5/16; the rest 1/16.
    Less the identity path's 1/16: 4/16 at token 0, 0 elsewhere."""
    attn = _all_look_at_first(4, 2, 0)  # [4, 1, 4, 4]
    grad = torch.zeros_like(attn)
    grad[0] = 1.0
    expected = torch.zeros(4, 4)
    expected[0, 0] = 4 / 16
    torch.testing.assert_close(ex.grad_rollout([_synthetic(4, 2, 0, attn)], [grad]), expected)
    torch.testing.assert_close(
        ex.grad_rollout([_synthetic(4, 2, 0, attn)], [grad], identity_path=True), expected + 1 / 16
    )
    # shift 1: window 0 holds image rows/cols {1, 2}, its token 0 is image (1, 1)
    expected = torch.zeros(4, 4)
    expected[1, 1] = 4 / 16
    torch.testing.assert_close(ex.grad_rollout([_synthetic(4, 2, 1, attn)], [grad]), expected)
    # a negative gradient is clamped away: nothing but the identity path is left
    torch.testing.assert_close(ex.grad_rollout([_synthetic(4, 2, 0, attn)], [-grad]), torch.zeros(4, 4))
    torch.testing.assert_close(
        ex.grad_rollout([_synthetic(4, 2, 0, attn)], [-grad], identity_path=True), torch.full((4, 4), 1 / 16)
    )
    # two heads: the mean over heads of the clamped products (head 1 attends to itself with gradient 1: Abar = I/2
    # there, so every token of window 0 gains half its weight, and token 0 gets half the look-at-first mass)
    two = torch.cat([attn, torch.eye(4).expand(4, 1, 4, 4)], dim=1)  # [4, 2, 4, 4]
    g2 = torch.zeros_like(two)
    g2[0] = 1.0
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 0.5 / 16
    expected[0, 0] = (0.5 + 4 * 0.5) / 16
    torch.testing.assert_close(ex.grad_rollout([_synthetic(4, 2, 0, two)], [g2]), expected)


def test_grad_rollout_by_hand_merge():
    """Stage 0: 4x4, one window, zero gradient (identity). Stage 1: 2x2, one window, all look at coarse (0, 0) with
    gradient 1: it gets 1/4 + 4 * 1/4 = 5/4, the others 1/4; each child gets a quarter: 5/16 and 1/16; less the
    identity path's 1/16: 4/16 on the children of coarse (0, 0), 0 elsewhere."""
    records = [
        _synthetic(4, 4, 0, torch.eye(16).expand(1, 1, 16, 16)),
        _synthetic(2, 2, 0, _all_look_at_first(1, 2, 0), 1, 0),
    ]
    grads = [torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 4, 4)]
    expected = torch.full((4, 4), 1 / 16)
    expected[:2, :2] = 5 / 16
    torch.testing.assert_close(ex.grad_rollout(records, grads, identity_path=True), expected)
    torch.testing.assert_close(dense_grad_rollout(records, grads), expected)
    torch.testing.assert_close(ex.grad_rollout(records, grads), expected - 1 / 16)
    torch.testing.assert_close(dense_grad_rollout(records, grads, identity_path=False), expected - 1 / 16)


def test_grad_rollout_refuses_bad_input(tiny_model, tiny):
    _, records, grads = ex.class_gradients(tiny_model, _tiny_input(), 0)
    with pytest.raises(ValueError):
        ex.grad_rollout(records, grads[:-1])
    with pytest.raises(ValueError):
        ex.grad_rollout([], [])
    with pytest.raises(ValueError):
        ex.grad_rollout(records[::-1], grads[::-1])
    with pytest.raises(ValueError, match="does not match"):
        ex.grad_rollout(records[:2], [grads[0], grads[2]])  # [4, 2, N, N] for [16, 1, N, N]
    with pytest.raises(ValueError, match="one image"):
        ex.class_gradients(tiny_model, torch.randn(2, 3, 64, 64), 0)


@pytest.mark.slow
def test_pipeline_swin_grad_rollout(tiny_model):
    """The `swin-grad-rollout` method of `classifier_map`: the class's map, scaled to max 1; another class, another
    map (the app's click on a class)."""
    from types import SimpleNamespace

    from vtdemo import pipeline
    from vtdemo.explain import normalize_map

    x = _tiny_input()
    with torch.inference_mode():
        out = tiny_model(x, return_attn=True)
    loaded = SimpleNamespace(family="swin", model=tiny_model, labels=[f"c{i}" for i in range(10)], id="tiny")
    run = pipeline.ClassifierRun(loaded=loaded, image=None, x=x, logits=out.logits[0], attentions=out.attentions)
    m, target = pipeline.classifier_map(run, "swin-grad-rollout", class_index=3)
    assert target["index"] == 3 and m.shape == (16, 16)
    torch.testing.assert_close(m, normalize_map(ex.grad_rollout(*ex.class_gradients(tiny_model, x, 3)[1:])))
    m_top, target_top = pipeline.classifier_map(run, "swin-grad-rollout")
    assert target_top["index"] == int(out.logits[0].argmax())
    other = 3 if target_top["index"] != 3 else 5
    assert not torch.allclose(m_top, pipeline.classifier_map(run, "swin-grad-rollout", class_index=other)[0])


@pytest.mark.slow
def test_swin_t_grad_rollout_full_size():
    torch.manual_seed(0)
    model = SwinTransformer(SwinConfig()).eval().requires_grad_(False)  # Swin-T 224, frozen as the hub loads it
    x = torch.randn(1, 3, 224, 224)
    t0 = time.perf_counter()
    _, records, grads = ex.class_gradients(model, x, 0)
    m = ex.grad_rollout(records, grads)
    elapsed = time.perf_counter() - t0
    assert m.shape == (56, 56) and torch.isfinite(m).all() and (m >= 0).all() and float(m.max()) > 0
    assert elapsed < 30.0  # not a timing test: forward + backward + map, measured separately
