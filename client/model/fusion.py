"""Cross-attention fusion of global and local prompts (one module per modality), and its ablations.

attention: fused = Q + MHA(LN(Q), LN(KV), LN(KV)), Q the `query` side, KV the other. The output projection
starts at zero, so a fresh module returns Q unchanged and learns how much of the other side to pull in.
sum: the mean of both sides (no attention). concat: both sides one after the other (twice the tokens).
"""

from __future__ import annotations

import torch
from torch import nn

from ...common.spec import Fusion, FusionQuery


class PromptFusion(nn.Module):
    def __init__(self, kind: Fusion, dim: int, heads: int = 1, query: FusionQuery = FusionQuery.LOCAL) -> None:
        super().__init__()
        if kind == Fusion.ATTENTION and dim % heads:
            raise ValueError(f"fusion heads ({heads}) must divide the prompt width ({dim})")
        self.kind, self.query = kind, query
        if kind == Fusion.ATTENTION:
            self.norm_q = nn.LayerNorm(dim)
            self.norm_kv = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.attn.out_proj.bias)

    def tokens_out(self, tokens_in: int) -> int:
        return 2 * tokens_in if self.kind == Fusion.CONCAT else tokens_in

    def forward(self, global_prompts: torch.Tensor, local_prompts: torch.Tensor) -> torch.Tensor:
        """[D, n, d] x [D, n, d] -> [D, n', d] (D: prompt layers, one attention batch each)."""
        if self.kind == Fusion.SUM:
            return (global_prompts + local_prompts) / 2
        if self.kind == Fusion.CONCAT:
            return torch.cat([global_prompts, local_prompts], dim=-2)
        q, kv = (local_prompts, global_prompts) if self.query == FusionQuery.LOCAL else (global_prompts, local_prompts)
        kv_n = self.norm_kv(kv)
        attended, _ = self.attn(self.norm_q(q), kv_n, kv_n, need_weights=False)
        return q + attended
