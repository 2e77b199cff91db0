"""No-op Flower app: the same 82 KB of float32 as pfeddc's ViT-B/16 prompts, no training."""
