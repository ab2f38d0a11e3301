"""Measuring explanations and the detector the way the papers do (`python -m vtdemo evaluate ...`).

- `perturbation`: positive / negative perturbation tests and their AUC (Chefer, Gur & Wolf, CVPR 2021), pure.
- `faithfulness`: one image through those tests for several methods, plus the `random` and `edge` controls.
- `randomisation`: cascading parameter randomisation (Adebayo et al., NeurIPS 2018), its verdict and a PIL chart.
- `coco`: COCO box AP of DETR with pycocotools (every query kept, as DETR's own evaluation).
- `runner`: a folder of images as input (labels, progress bar, JSONL streaming, resume); `ray_engine`: the same
  evaluation on Ray Data (optional dependency); `cli`: the command's arguments and tables.

Nothing here imports Gradio; nothing heavy is imported by this package itself.
"""
