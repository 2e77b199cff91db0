"""The configuration of the embedded default backbone, torch-free so the coordinator can read its shapes.

The weights are built from this config and a seed by tools/embedded and shipped in client/embedded/weights.
"""

from __future__ import annotations

from typing import Any

EMBEDDED_IMAGE_SIZE = 32  # the pixels of its images: the config's and the pretraining corpus's

# The shipped weights' config.json holds the same sizes (tests/client/embedded checks that they agree).
EMBEDDED_CONFIG: dict[str, Any] = {
    "model_type": "clip",
    "projection_dim": 128,
    "logit_scale_init_value": 2.6592,
    "text_config": {
        "vocab_size": 49408,  # the OpenAI CLIP byte-level BPE, as in openai/clip-vit-base-patch16
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    },
    "vision_config": {
        "hidden_size": 192,
        "intermediate_size": 768,
        "num_hidden_layers": 6,
        "num_attention_heads": 3,
        "image_size": EMBEDDED_IMAGE_SIZE,
        "patch_size": 8,
        "num_channels": 3,
    },
}
