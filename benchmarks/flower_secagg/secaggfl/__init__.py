"""No-op Flower app, plain FedAvg or SecAgg+: the same 82 KB of float32 as pfeddc's ViT-B/16 prompts, no training."""
