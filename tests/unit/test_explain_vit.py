"""ViT explanations: rollout properties, small cases worked by hand, gradient pairing, and the deletion curve."""

from __future__ import annotations

import pytest
import torch

from vtdemo.explain import deletion
from vtdemo.explain import vit as ex
from vtdemo.models.vit import VisionTransformer, ViTConfig


def random_attn(layers: int, heads: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(heads, n, n, generator=g).softmax(-1) for _ in range(layers)]


@pytest.mark.parametrize("fusion", ex.FUSIONS)
@pytest.mark.parametrize("discard", [0.0, 0.5, 0.9])
def test_rollout_rows_stay_stochastic(fusion, discard):
    R = ex.rollout_matrix(random_attn(4, 3, 7), fusion, discard)
    torch.testing.assert_close(R.sum(-1), torch.ones(7))
    assert (R >= 0).all()


def test_uniform_attention_gives_uniform_map():
    n = 10
    uniform = [torch.full((2, n, n), 1.0 / n) for _ in range(3)]
    m = ex.rollout(uniform)
    torch.testing.assert_close(m, torch.full((n - 1,), float(m[0])))


def test_identity_attention_gives_identity():
    eye = [torch.eye(5).expand(2, 5, 5) for _ in range(3)]
    torch.testing.assert_close(ex.rollout_matrix(eye), torch.eye(5))
    assert torch.count_nonzero(ex.rollout(eye)) == 0


def test_discard_never_removes_prefix_columns():
    attn = torch.rand(6, 6) * 0.01 + 1.0
    attn[:, :2] = 1e-6  # CLS and DIST columns are the smallest entries of all
    out = ex.discard_lowest(attn, 0.95, num_prefix=2)
    assert torch.equal(out[:, :2], attn[:, :2])
    assert int((out[:, 2:] == 0).sum()) == int(6 * 4 * 0.95)


def test_head_fusion_changes_only_what_it_should():
    a = random_attn(1, 1, 5)[0]
    b = random_attn(1, 1, 5, seed=1)[0]
    same = torch.cat([a, a, a])
    for fusion in ex.FUSIONS:
        torch.testing.assert_close(ex.fuse_heads(same, fusion), a[0])  # identical heads: fusion is irrelevant
    mixed = torch.cat([a, b])
    torch.testing.assert_close(ex.fuse_heads(mixed, "max"), torch.maximum(a[0], b[0]))
    torch.testing.assert_close(ex.fuse_heads(mixed, "min"), torch.minimum(a[0], b[0]))
    torch.testing.assert_close(ex.fuse_heads(mixed, "mean"), (a[0] + b[0]) / 2)


# Two layers, one head, tokens [CLS, p1, p2]; worked by hand in the comments.
A1 = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
A2 = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])


def test_rollout_by_hand():
    # A1' = (A1 + I) / 2 = [[.75, .125, .125], [0, 1, 0], [0, 0, 1]]
    # A2' = (A2 + I) / 2 = [[.5, .5, 0], [.25, .75, 0], [0, 0, 1]]
    # R = A2' A1': row 0 = .5 * [.75, .125, .125] + .5 * [0, 1, 0] = [.375, .5625, .0625]
    torch.testing.assert_close(ex.rollout([A1[None], A2[None]]), torch.tensor([0.5625, 0.0625]))
    # start_layer=1 keeps only A2': row 0 = [.5, .5, 0]
    torch.testing.assert_close(ex.rollout([A1[None], A2[None]], start_layer=1), torch.tensor([0.5, 0.0]))


def test_grad_rollout_by_hand_and_layer_order_matters():
    ones = torch.ones(1, 3, 3)
    # R1 = I + A1 = [[1.5, .25, .25], [0, 2, 0], [0, 0, 2]]; R2 = R1 + A2 R1, row 0 = [1.5, .25, .25] + [0, 2, 0]
    torch.testing.assert_close(ex.grad_rollout([A1[None], A2[None]], [ones, ones]), torch.tensor([2.25, 0.25]))
    # The other order (A2 first) gives row 0 = [1.625, 1.875, .5]: pairing matters
    torch.testing.assert_close(ex.grad_rollout([A2[None], A1[None]], [ones, ones]), torch.tensor([1.875, 0.5]))
    # Negative gradient*attention is clamped away: only positive evidence flows
    neg = -ones
    torch.testing.assert_close(ex.grad_rollout([A1[None], A2[None]], [neg, neg]), torch.tensor([0.0, 0.0]))


def test_class_gradients_pair_each_layer_with_its_own_gradient():
    torch.manual_seed(0)
    model = (
        VisionTransformer(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=7))
        .eval()
        .requires_grad_(False)
    )
    x = torch.randn(1, 3, 32, 32)
    logits, attns, grads = ex.class_gradients(model, x, class_index=4)
    # independent computation with torch.autograd.grad on a fresh forward pass
    out = model(x.clone().requires_grad_(True), return_attn=True)
    expected = torch.autograd.grad(out.logits[0, 4], out.attentions)
    for got, want, a, b in zip(grads, expected, attns, out.attentions, strict=True):
        torch.testing.assert_close(got, want[0])
        torch.testing.assert_close(a, b[0].detach())
    torch.testing.assert_close(logits, out.logits[0].detach())
    # a different class gives a different relevance map
    r4 = ex.grad_rollout(attns, grads)
    _, attns2, grads2 = ex.class_gradients(model, x, class_index=1)
    assert not torch.allclose(r4, ex.grad_rollout(attns2, grads2))


def test_cls_attention_per_head():
    attn = random_attn(2, 3, 5)
    got = ex.cls_attention(attn, num_prefix=1)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, attn[-1][:, 0, 1:])


class PatchSum(torch.nn.Module):
    """A 'classifier' on a 4x4 grid of 8x8 patches whose class-0 logit only sees patches `important`."""

    def __init__(self, important: list[int]):
        super().__init__()
        mask = torch.zeros(16)
        mask[important] = 1.0
        self.register_buffer("mask", mask.view(1, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3))

    def forward(self, x):
        evidence = (x * self.mask).sum(dim=(1, 2, 3)) / self.mask.sum() * 4  # [B]
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)  # [B, 2]


def test_deletion_curve_rewards_the_right_map():
    important = [0, 5, 10, 15]
    model = PatchSum(important)
    x = torch.ones(1, 3, 32, 32)

    def prob(images):
        return model(images).softmax(-1)[:, 0]

    right = torch.zeros(16)
    right[important] = 1.0
    wrong = 1.0 - right
    curves = {}
    for name, relevance in (("right", right), ("wrong", wrong)):
        frac, p = deletion.deletion_curve(prob, x, deletion.patch_order(relevance.view(4, 4)), (4, 4), steps=16)
        curves[name] = deletion.area_under_curve(frac, p)
        assert p[0] == pytest.approx(float(prob(x)[0]))
        assert p[-1] == pytest.approx(0.5)  # everything deleted: no evidence left
    g = torch.Generator().manual_seed(0)
    frac, p = deletion.deletion_curve(prob, x, torch.randperm(16, generator=g), (4, 4), steps=16)
    random_auc = deletion.area_under_curve(frac, p)
    assert curves["right"] < random_auc < curves["wrong"]
    # the wrong map deletes 12 irrelevant patches first: probability stays put for 3/4 of the curve
    assert curves["wrong"] > 0.9
