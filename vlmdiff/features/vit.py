"""Vision transformers in the official DINO (v1) and DINOv2 checkpoint layouts, for anomaly scoring.

Attribute names equal the released checkpoints' keys (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``; DINOv2 adds ``mask_token``
and ``blocks.<i>.ls{1,2}.gamma``). Position embeddings trained at 224 (v1) or 518 (v2) are resized for
other inputs by bicubic interpolation with DINO's scale factors ``(n + 0.1) / √N``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d/heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, layer_scale: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class VisionTransformer(nn.Module):
    """ViT returning the last block's normalised patch tokens as a ``(B, D, H/p, W/p)`` map."""

    def __init__(self, *, patch: int, dim: int, depth: int, heads: int, train_size: int = 224,
                 dinov2: bool = False):
        super().__init__()
        self.patch = patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (train_size // patch) ** 2, dim))
        if dinov2:
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, layer_scale=dinov2) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an ``h × w`` patch grid (bicubic, DINO's ``+0.1`` scale factors)."""
        n = self.pos_embed.shape[1] - 1
        if h * w == n and h == w:
            return self.pos_embed
        side = int(math.sqrt(n))
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, √N, √N)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
        if grid.shape[-2:] != (h, w):
            raise ValueError(f"position embedding interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        h, w = height // self.patch, width // self.patch
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(x)], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h, w)
        for block in self.blocks:
            tokens = block(tokens)
        patches = self.norm(tokens)[:, 1:]  # CLS token dropped
        return patches.transpose(1, 2).reshape(b, -1, h, w)  # (B, D, h, w)
