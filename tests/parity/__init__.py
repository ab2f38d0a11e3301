"""The parity layer: our models, preprocessing and explanations against timm / transformers / lxt / grad-cam /
pycocotools on the same weights, the Hub-format loading tests, and the fast path against the exact one."""
