"""Cross-attention transformer blocks of the SD-1.x UNet (docs/design.md §3.2).

Attribute names are the Stable Diffusion checkpoint keys: ``norm``, ``proj_in``,
``transformer_blocks.<i>.{attn1,ff,attn2,norm1,norm2,norm3}``, ``proj_out``.
Attention runs through ``torch.nn.functional.scaled_dot_product_attention``; the reference uses
xformers' memory-efficient kernel when present, which computes the same softmax(q·kᵀ/√d)·v.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (the "zero initialisation" of output projections)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GEGLU(nn.Module):
    """Gated GELU: ``value · GELU(gate)`` with value and gate the two halves of one projection."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net.0`` = GEGLU(dim → 4·dim), ``net.1`` = dropout, ``net.2`` = Linear(4·dim → dim)."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Multi-head attention; keys/values from ``context`` (cross) or from ``x`` itself (self)."""

    def __init__(self, query_dim: int, *, context_dim: int | None = None, heads: int = 8,
                 dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        # (B, N, heads·d) -> (B, heads, N, d)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale d^-1/2, softmax over keys
        out = out.transpose(1, 2).reshape(b, n, -1)  # (B, N, heads·d)
        return self.to_out(out)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention and gated feed-forward, each pre-LayerNorm and residual."""

    def __init__(self, dim: int, n_heads: int, d_head: int, *, context_dim: int | None = None,
                 dropout: float = 0.0, disable_self_attn: bool = False, checkpoint: bool = False):
        super().__init__()
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, context_dim=context_dim if disable_self_attn else None,
                                    heads=n_heads, dim_head=d_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head,
                                    dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.checkpoint = checkpoint

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, use_reentrant=False)
        return self._forward(x, context)

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map, conditioned on a token sequence.

    GroupNorm(``norm_groups``, eps 1e-6) → ``proj_in`` (1×1 conv, or Linear with ``use_linear``) → tokens →
    ``depth`` BasicTransformerBlocks → ``proj_out`` (zero-initialised) → residual.
    """

    def __init__(self, in_channels: int, n_heads: int, d_head: int, *, depth: int = 1,
                 dropout: float = 0.0, context_dim: int | Sequence[int] | None = None,
                 disable_self_attn: bool = False, use_linear: bool = False,
                 use_checkpoint: bool = False, norm_groups: int = 32):
        super().__init__()
        if context_dim is None or isinstance(context_dim, int):
            context_dim = [context_dim] * depth
        inner = n_heads * d_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(norm_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner) if use_linear else nn.Conv2d(in_channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, n_heads, d_head, context_dim=context_dim[d], dropout=dropout,
                                  disable_self_attn=disable_self_attn, checkpoint=use_checkpoint)
            for d in range(depth))
        proj_out = nn.Linear(inner, in_channels) if use_linear else nn.Conv2d(inner, in_channels, 1)
        self.proj_out = zero_module(proj_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | list | None = None) -> torch.Tensor:
        if not isinstance(context, (list, tuple)):
            context = [context] * len(self.transformer_blocks)
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)  # (B, H·W, C), row-major pixels
        if self.use_linear:
            x = self.proj_in(x)
        for block, ctx in zip(self.transformer_blocks, context):
            x = block(x, context=ctx)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)  # (B, C, H, W)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in
