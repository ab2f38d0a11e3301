"""The ViT column's self-supervised views through the app's API (gradio_client), on tiny DINOv2 checkpoints with and
without registers written by transformers' `save_pretrained` into the tests' Hub cache, at the app's default
precision (fast) and exact: a feature model shows no top 5 and says why; heads, feature colours (one photo and two)
and the registers pair come back with their captions; the class-based checks refuse a feature model in one line;
a non-DINOv2 model is told what the registers view needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

transformers = pytest.importorskip("transformers")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from tests.parity.test_dinov2 import BIT_PREPROCESSOR  # noqa: E402
from tests.support.apps import launched_app  # noqa: E402
from tests.support.hubcache import write_transformers_repo  # noqa: E402
from tests.support.weights import randomise_classifier  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "assets" / "examples" / "chelsea.png")
ASTRONAUT = str(ROOT / "assets" / "examples" / "astronaut.png")
CLASSIFIER = "facebook/dinov2-small-imagenet1k-1-layer"
BACKBONE = "facebook/dinov2-small"


@pytest.fixture(scope="module")
def dino_hub(tiny_hub, tmp_path_factory):
    """The tiny repos plus tiny DINOv2 classifiers and backbones, with and without registers."""
    T = transformers
    tmp = tmp_path_factory.mktemp("dino")
    args = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=518, patch_size=14)
    for reg in (False, True):
        config = T.Dinov2WithRegistersConfig if reg else T.Dinov2Config
        middle = "with-registers-" if reg else ""
        heads = T.Dinov2WithRegistersForImageClassification if reg else T.Dinov2ForImageClassification
        backbone = T.Dinov2WithRegistersModel if reg else T.Dinov2Model
        model = randomise_classifier(heads(config(**args, num_labels=10)), 3)
        write_transformers_repo(
            tiny_hub.cache, f"facebook/dinov2-{middle}small-imagenet1k-1-layer", model, tmp, BIT_PREPROCESSOR
        )
        model = randomise_classifier(backbone(config(**args)), 4)
        write_transformers_repo(tiny_hub.cache, f"facebook/dinov2-{middle}small", model, tmp, BIT_PREPROCESSOR)
    return tiny_hub


def _image(value) -> Image.Image:
    return Image.open(value["path"] if isinstance(value, dict) else value)


@pytest.mark.parametrize("precision", ["fast", "exact"])
def test_views_on_a_dinov2_classifier_and_backbone(dino_hub, precision, tmp_path):
    with launched_app(dino_hub, vit_model=CLASSIFIER, precision=precision) as (_, url):
        client = Client(url, verbose=False, download_files=False)
        out = client.predict(handle_file(CAT), CLASSIFIER, "rollout", 0.5, api_name="/classify_vit")
        assert out[0]["confidences"] and out[1] is not None  # a classifier: its top 5, and a map
        # positions for 518 px, processor's crop 224: at precision fast the graph runs the crop (it once ran exact
        # while saying OpenVINO)
        assert ("OpenVINO" in out[3] and "(fast)" in out[3]) == (precision == "fast") and "224x224px input" in out[3]
        image, text = client.predict(api_name="/dino_heads_vit")
        assert "DINO's mask" in text and _image(image).width > 300  # 2 heads: attention + mask each
        image, text = client.predict(None, api_name="/dino_features_vit")
        assert "principal components" in text and "both photos" not in text
        image, text = client.predict(handle_file(ASTRONAUT), api_name="/dino_features_vit")
        assert "One PCA is fitted on both photos" in text
        pair = _image(image)
        assert pair.height > pair.width  # two rows: the two photos, each with its colours
        fake = tmp_path / "holiday.jpg"
        fake.write_text("a text file with a photo's name\n")
        image, text = client.predict(handle_file(str(fake)), api_name="/dino_features_vit")
        assert image is None and "holiday.jpg: unsupported format" in text and "/tmp" not in text
        image, text = client.predict(api_name="/dino_registers_vit")
        assert image is not None and CLASSIFIER in text and "with-registers" in text and "outlier" in text

        out = client.predict(handle_file(CAT), BACKBONE, "rollout", 0.5, api_name="/classify_vit")
        label, status = out[0], out[3]
        assert (
            label["label"] == "No classes: a feature model"
            and not label.get("confidences")
            and "feature model (no classifier head)" in status
        )
        assert out[1] is not None  # the rollout map still shows
        label, status = (out := client.predict("448", False, 0.5, api_name="/resize_vit"))[0], out[3]
        assert label["label"] == "No classes: a feature model" and "feature model (no classifier head)" in status
        ran = "(exact): this input size runs on the exact model" if precision == "fast" else "f32 on cpu (exact)"
        assert "448x448px input" in status and ran in status  # a new size says what ran it, as a new photo does
        chart, text = client.predict(api_name="/deletion_vit")
        assert chart is None and "no classifier head" in text
        image, text = client.predict(api_name="/dino_heads_vit")
        assert image is not None and "DINO's mask" in text


def test_registers_view_on_another_vit_says_what_it_needs(dino_hub):
    with launched_app(dino_hub) as (_, url):
        client = Client(url, verbose=False, download_files=False)
        client.predict(handle_file(CAT), "", "rollout", 0.5, api_name="/classify_vit")
        image, text = client.predict(api_name="/dino_registers_vit")
        assert image is None and "is not a DINOv2 model" in text
        image, text = client.predict(api_name="/dino_heads_vit")  # heads apply to any ViT with a CLS token
        assert image is not None
