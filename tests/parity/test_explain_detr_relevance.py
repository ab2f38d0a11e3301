"""DETR relevance per detection (Chefer, Gur & Wolf, ICCV 2021): the rules on small cases worked by hand, their
properties, and the whole method against an independent implementation of the published rules run on transformers'
`DetrForObjectDetection` (eager attention) with the same weights.
"""

from __future__ import annotations

import pytest
import torch

from vtdemo.convert.detr import from_hf
from vtdemo.explain import detr_relevance as rel
from vtdemo.models.detr import DETR, config_from_hf

# ----------------------------------------------------------------------------------------------- rules by hand


def heads(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two heads whose gradient-weighted average is exactly A: head 0 (A, grad 2) gives 2A, head 1 (A, grad -1)
    gives -A, clamped to 0; the mean is A."""
    attn = torch.stack([A, A])
    grad = torch.stack([torch.full_like(A, 2.0), torch.full_like(A, -1.0)])
    return attn, grad


def test_avg_heads_by_hand():
    attn = torch.tensor([[[0.5, 0.5]], [[0.2, 0.8]]])  # [nh=2, 1, 2]
    grad = torch.tensor([[[1.0, -1.0]], [[3.0, 1.0]]])
    # head 0: (0.5, -0.5)^+ = (0.5, 0); head 1: (0.6, 0.8); mean (0.55, 0.4)
    torch.testing.assert_close(rel.avg_heads(attn, grad), torch.tensor([[0.55, 0.4]]))


def test_normalize_residual_by_hand():
    R = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, 0.0], [0.0, 0.0, 1.0]])
    # R - I = [[1, 1, 0], [.5, .5, 0], [0, 0, 0]], row sums 2, 1, 0 -> [[.5, .5, 0], [.5, .5, 0], [0, 0, 0]] + I
    expected = torch.tensor([[1.5, 0.5, 0.0], [0.5, 1.5, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(rel.normalize_residual(R), expected)


def test_two_encoder_and_two_decoder_layers_by_hand():
    """3 image tokens, 2 queries.

    Encoder: A1 = token 0 draws on token 1, A2 = token 1 draws on token 2:
      R_ii = I + A1 = [[1,1,0],[0,1,0],[0,0,1]]; R_ii += A2 R_ii -> [[1,1,0],[0,1,1],[0,0,1]];
      norm(R_ii): rows of R_ii - I sum to 1, 1, 0 -> unchanged.
    Decoder layer 1: self A = [[0, .5], [0, 0]] -> R_qq = [[1, .5], [0, 1]], R_qi stays 0;
      norm(R_qq) = [[1, 1], [0, 1]]; cross C = [[1, 0, 0], [0, 0, 2]]:
      C norm(R_ii) = [[1, 1, 0], [0, 0, 2]]; norm(R_qq)^T (that) = [[1, 1, 0], [1, 1, 2]] = R_qi.
    Decoder layer 2: self A = [[0, 1], [0, 0]]: R_qi += A R_qi -> row 0 += row 1 -> [[2, 2, 2], [1, 1, 2]];
      R_qq += A R_qq -> [[1, 1.5], [0, 1]]; cross all zero -> no change.
    """
    A1 = torch.tensor([[0.0, 1, 0], [0, 0, 0], [0, 0, 0]])
    A2 = torch.tensor([[0.0, 0, 0], [0, 0, 1], [0, 0, 0]])
    S1 = torch.tensor([[0.0, 0.5], [0, 0]])
    C1 = torch.tensor([[1.0, 0, 0], [0, 0, 2]])
    S2 = torch.tensor([[0.0, 1], [0, 0]])
    C2 = torch.zeros(2, 3)
    R = rel.propagate([heads(A1), heads(A2)], [(*heads(S1), *heads(C1)), (*heads(S2), *heads(C2))])
    torch.testing.assert_close(R.R_ii, torch.tensor([[1.0, 1, 0], [0, 1, 1], [0, 0, 1]]))
    torch.testing.assert_close(R.R_qq, torch.tensor([[1.0, 1.5], [0, 1]]))
    torch.testing.assert_close(R.R_qi, torch.tensor([[2.0, 2, 2], [1, 1, 2]]))
    # Without the normalisation (eqs. 8-9 off) rule 10 uses R_qq = [[1, .5], [0, 1]] itself in layer 1:
    # R_qq^T C R_ii = [[1, 0], [.5, 1]] [[1, 1, 0], [0, 0, 2]] = [[1, 1, 0], [.5, .5, 2]]; layer 2 adds row 1 to row 0.
    R = rel.propagate([heads(A1), heads(A2)], [(*heads(S1), *heads(C1)), (*heads(S2), *heads(C2))], normalize=False)
    torch.testing.assert_close(R.R_qi, torch.tensor([[1.5, 1.5, 2], [0.5, 0.5, 2]]))


def _random_layers(seed: int, N: int = 4, Q: int = 3, nh: int = 2, enc: int = 2, dec: int = 2):
    g = torch.Generator().manual_seed(seed)

    def pair(n, m):
        return torch.rand(nh, n, m, generator=g).softmax(-1), torch.randn(nh, n, m, generator=g)

    return [pair(N, N) for _ in range(enc)], [(*pair(Q, Q), *pair(Q, N)) for _ in range(dec)]


@pytest.mark.parametrize("seed", range(5))
def test_properties_non_negative_normalised_rows_and_head_order(seed):
    enc, dec = _random_layers(seed)
    R = rel.propagate(enc, dec)
    eye4, eye3 = torch.eye(4), torch.eye(3)
    assert (R.R_qi >= 0).all() and (R.R_ii - eye4 >= 0).all() and (R.R_qq - eye3 >= -1e-7).all()
    # the normalised part of each row sums to 1 (every row was reached here)
    torch.testing.assert_close((rel.normalize_residual(R.R_ii) - eye4).sum(-1), torch.ones(4))
    # invariant to the order of the heads (the rule averages them)
    flip = [(a.flip(0), g.flip(0)) for a, g in enc]
    flip_dec = [(a.flip(0), g.flip(0), c.flip(0), h.flip(0)) for a, g, c, h in dec]
    torch.testing.assert_close(rel.propagate(flip, flip_dec).R_qi, R.R_qi)


def test_zero_gradient_gives_zero_relevance_and_negative_evidence_is_ignored():
    enc, dec = _random_layers(0)
    zero_enc = [(a, torch.zeros_like(g)) for a, g in enc]
    zero_dec = [(a, torch.zeros_like(g), c, torch.zeros_like(h)) for a, g, c, h in dec]
    R = rel.propagate(zero_enc, zero_dec)
    assert float(R.R_qi.abs().sum()) == 0.0
    torch.testing.assert_close(R.R_ii, torch.eye(4))
    neg_dec = [(a, -g.abs(), c, -h.abs()) for a, g, c, h in dec]  # only negative evidence in the decoder
    assert float(rel.propagate(enc, neg_dec).R_qi.abs().sum()) == 0.0


def test_box_targets_are_the_outward_edges():
    logits = torch.tensor([[0.0, 3.0, 1.0, 9.0]])  # the last column is "no object": predicted class 1
    boxes = torch.tensor([[0.5, 0.4, 0.2, 0.6]])  # cx, cy, w, h
    t = rel.targets_of(logits, boxes, 0, "box")
    assert list(t) == ["x0", "y0", "x1", "y1"]
    torch.testing.assert_close(torch.stack(list(t.values())), torch.tensor([-0.4, -0.1, 0.6, 0.7]))
    assert float(rel.targets_of(logits, boxes, 0, "class")["class"]) == 3.0
    with pytest.raises(ValueError, match="'class' or 'box'"):
        rel.targets_of(logits, boxes, 0, "mask")


# ----------------------------------------------------------------------------------------------- transformers


def reference_relevance(hf, pixel_values: torch.Tensor, query: int, kind: str) -> dict[str, torch.Tensor]:
    """The published rules written again from the paper (eqs. 5-10) on transformers' DETR: its eager attention
    weights (in the graph) and their gradients; every matrix built explicitly, with a loop per rule."""
    out = hf(pixel_values=pixel_values, output_attentions=True)
    enc, dself, cross = out.encoder_attentions, out.decoder_attentions, out.cross_attentions
    logits, boxes = out.logits[0, query], out.pred_boxes[0, query]
    if kind == "class":
        scalars = {"class": logits[:-1].max()}
    else:
        cx, cy, w, h = boxes
        scalars = {"x0": -(cx - w / 2), "y0": -(cy - h / 2), "x1": cx + w / 2, "y1": cy + h / 2}
    maps = {}
    for name, y in scalars.items():
        grads = torch.autograd.grad(y, [*enc, *dself, *cross], retain_graph=True)
        g_enc, g_self, g_cross = (
            grads[: len(enc)],
            grads[len(enc) : len(enc) + len(dself)],
            grads[len(enc) + len(dself) :],
        )

        def bar(a, g):
            return (a[0] * g[0]).clamp(min=0).mean(0)  # eq. 5: E_h((grad A * A)^+)

        def norm(R):  # eqs. 8-9
            n = R.shape[0]
            Rh = R - torch.eye(n)
            out = torch.zeros_like(R)
            for i in range(n):
                s = Rh[i].sum()
                out[i] = Rh[i] / s if s > 0 else Rh[i]
            return out + torch.eye(n)

        N, Q = enc[0].shape[-1], dself[0].shape[-1]
        Rii, Rqq, Rqi = torch.eye(N), torch.eye(Q), torch.zeros(Q, N)
        for a, g in zip(enc, g_enc, strict=True):
            Rii = Rii + bar(a, g) @ Rii  # eq. 6
        for a, g, c, gc in zip(dself, g_self, cross, g_cross, strict=True):
            A = bar(a, g)
            Rqi = Rqi + A @ Rqi  # eq. 7
            Rqq = Rqq + A @ Rqq  # eq. 6
            Rqi = Rqi + norm(Rqq).T @ bar(c, gc) @ norm(Rii)  # eq. 10
        maps[name] = Rqi[query].detach()
    return maps


@pytest.fixture(scope="module")
def detr_pair(tmp_path_factory, photos):
    from tests.parity.test_detr import TINY_HF, build_hf, to_tensor

    torch.manual_seed(0)
    calibration = to_tensor(photos["rocket"], 192, 128)[None]
    hf, hub_sd, config = build_hf(tmp_path_factory.mktemp("detr_rel"), calibration, **TINY_HF)
    ours = DETR(config_from_hf(config)).eval()
    ours.load_state_dict(from_hf(hub_sd), strict=True)
    ours.requires_grad_(False)  # as the hub loads it
    x = to_tensor(photos["chelsea"], 224, 160)[None]  # 7 x 5 backbone cells
    return hf, ours, x


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["class", "box"])
def test_matches_the_published_rules_on_transformers_detr(detr_pair, kind):
    hf, ours, x = detr_pair
    with torch.no_grad():
        probs = ours(x).logits[0].softmax(-1)[:, :-1].amax(-1)
    for query in probs.argsort(descending=True)[:2].tolist():
        expected = reference_relevance(hf, x, query, kind)
        got = rel.relevance_maps(ours, x, torch.ones(1, *x.shape[2:], dtype=torch.bool), query, kind)
        assert list(got) == list(expected)
        for name in expected:
            assert got[name].shape == (5, 7)
            e = expected[name].view(5, 7)
            assert float(e.max()) > 0
            torch.testing.assert_close(got[name], e, atol=1e-4 * float(e.max()), rtol=1e-3)
    assert all(p.grad is None for p in ours.parameters())


def test_the_class_map_is_not_the_raw_cross_attention(detr_pair):
    """Relevance is not attention: the map differs from the last layer's head-mean cross-attention."""
    _, ours, x = detr_pair
    with torch.no_grad():
        out = ours(x, return_attn=True)
    q = int(out.logits[0].softmax(-1)[:, :-1].amax(-1).argmax())
    m = rel.relevance_maps(ours, x, None, q)["class"].flatten()
    attn = out.decoder_cross_attn[-1][0, :, q].mean(0)
    assert not torch.allclose(m / m.max(), attn / attn.max(), atol=0.05)
