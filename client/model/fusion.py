"""How a dual placement combines its global and local prompts (one module per modality), and its ablations.

All variants work on offsets from a frozen base (the template's word embeddings for text, zeros for vision):

  attention  base + g + l + W_o MHA(LN(query side), LN(other side))   W_o starts at zero
  sum        base + g + l                                            (pfeddc-nofusion)
  concat     [base + g ; base + l]                                   twice the tokens

With every local tensor at zero (a new client), each variant computes `base + g`: the global model. Both
offsets get the full gradient from the first step, so the shared prompts learn from round one, and the
cross-attention learns on top how each client mixes its personal prompts into the shared ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ...common.spec import Fusion, FusionQuery


class PromptFusion(nn.Module):
    def __init__(self, kind: Fusion, dim: int, heads: int = 1, query: FusionQuery = FusionQuery.GLOBAL) -> None:
        super().__init__()
        if kind == Fusion.ATTENTION and dim % heads:
            raise ValueError(f"fusion heads ({heads}) must divide the prompt width ({dim})")
        self.kind = kind
        self.query = query
        if kind == Fusion.ATTENTION:
            self.norm_q = nn.LayerNorm(dim)
            self.norm_kv = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            nn.init.zeros_(self.attn.out_proj.weight)
            nn.init.zeros_(self.attn.out_proj.bias)

    def tokens_out(self, tokens_in: int) -> int:
        return 2 * tokens_in if self.kind == Fusion.CONCAT else tokens_in

    def forward(self, base: torch.Tensor, global_delta: torch.Tensor, local_delta: torch.Tensor) -> torch.Tensor:
        """[D, n, d] each -> [D, n', d] (D: prompt layers, one attention batch each)."""
        if self.kind == Fusion.CONCAT:
            return torch.cat([base + global_delta, base + local_delta], dim=-2)
        fused = base + global_delta + local_delta
        if self.kind == Fusion.SUM:
            return fused
        g = base + global_delta
        loc = base + local_delta
        q, kv = (g, loc) if self.query == FusionQuery.GLOBAL else (loc, g)
        kv_n = self.norm_kv(kv)
        attended, _ = self.attn(self.norm_q(q), kv_n, kv_n, need_weights=False)
        return fused + attended
