"""Our model code: ViT/DeiT, Swin and DETR in plain PyTorch, one architecture per file."""
