"""The configuration of the embedded default backbone, torch-free so the coordinator can read its shapes.

The weights are built by the client (client/embedded) from this config and a seed.
"""

from __future__ import annotations

from typing import Any

EMBEDDED_VOCAB_SIZE = 512
EMBEDDED_IMAGE_SIZE = 32

EMBEDDED_CONFIG: dict[str, Any] = {
    "model_type": "clip",
    "projection_dim": 128,
    "logit_scale_init_value": 2.6592,
    "text_config": {
        "vocab_size": EMBEDDED_VOCAB_SIZE,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "bos_token_id": 1,
        "eos_token_id": 3,
        "pad_token_id": 0,
    },
    "vision_config": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": EMBEDDED_IMAGE_SIZE,
        "patch_size": 8,
        "num_channels": 3,
    },
}
