"""The SD-1.x UNet (docs/design.md §3.2): timestep embedding, ResBlocks, resampling, UNetModel.

Module attribute names are the CompVis checkpoint keys (``time_embed``, ``input_blocks``,
``middle_block``, ``output_blocks``, ``out``), so Stable Diffusion 1.5 weights load with
``strict=True``. The encoder half is built by :func:`build_encoder`, which the semantic-guided network
reuses for its trainable copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ldm.modules.attention import SpatialTransformer, zero_module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, **cosine half first** (as SD, unlike "sin, cos").

    Args:
        t: ``(B,)`` timesteps (e.g. 901, not the DDIM index).
        dim: embedding width (``model_channels``).

    Returns:
        ``(B, dim)`` float32: ``[cos(t·f_0..f_{h-1}), sin(t·f_0..f_{h-1})]``, ``f_i = P^(-i/h)``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (eps 1e-5), cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int, groups: int = 32) -> nn.GroupNorm:
    return GroupNorm32(groups, channels)


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that hands ``emb`` to ResBlocks and ``context`` to SpatialTransformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class Downsample(nn.Module):
    """Stride-2 3×3 convolution (``op``), padding 1."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then a 3×3 convolution (``conv``)."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(TimestepBlock):
    """``skip(x) + conv(drop(SiLU(GN(conv(SiLU(GN(x))) + Linear(SiLU(emb))))))``; last conv zero-initialised."""

    def __init__(self, channels: int, emb_channels: int, *, out_channels: int | None = None,
                 dropout: float = 0.0, use_checkpoint: bool = False, norm_groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(normalization(channels, norm_groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels, norm_groups), nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


@dataclass
class UNetConfig:
    """The reference's ``unet_config.params`` / ``control_stage_config.params`` (unsupported variants raise)."""

    in_channels: int
    model_channels: int
    out_channels: int = 4
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (4, 2, 1)
    channel_mult: Sequence[int] = (1, 2, 4, 4)
    num_heads: int = 8
    num_head_channels: int = -1
    context_dim: int | None = 768
    transformer_depth: int = 1
    dropout: float = 0.0
    use_checkpoint: bool = False
    use_linear_in_transformer: bool = False
    hint_channels: int = 3
    image_size: int | None = None  # unused (the latent size follows the input)
    legacy: bool = True  # no effect with a spatial transformer: d_head = width / num_heads either way
    use_spatial_transformer: bool = True
    conv_resample: bool = True
    dims: int = 2
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_fp16: bool = False
    num_classes: int | None = None
    # groups of every GroupNorm (SD-1.x: 32, i.e. 10+ channels per group at its widths; docs/design.md §16)
    norm_num_groups: int = 32

    _UNSUPPORTED = {"use_spatial_transformer": True, "conv_resample": True, "dims": 2,
                    "use_scale_shift_norm": False, "resblock_updown": False, "num_classes": None}

    @classmethod
    def from_params(cls, **params) -> "UNetConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown UNet parameter(s) {unknown}; valid: {sorted(names)}")
        cfg = cls(**params)
        for name, supported in cls._UNSUPPORTED.items():
            if getattr(cfg, name) != supported:
                raise ValueError(f"UNet parameter {name}={getattr(cfg, name)!r} is not supported "
                                 f"(only {supported!r}, the SD-1.x setting)")
        if cfg.num_heads == -1 and cfg.num_head_channels == -1:
            raise ValueError("set either num_heads or num_head_channels")
        if cfg.context_dim is None:
            raise ValueError("context_dim is required (cross-attention on the caption tokens)")
        widths = sorted({cfg.model_channels * m for m in cfg.channel_mult})
        if cfg.norm_num_groups < 1 or any(w % cfg.norm_num_groups for w in widths):
            raise ValueError(f"UNet parameter norm_num_groups={cfg.norm_num_groups} must divide every width "
                             f"(model_channels × channel_mult: {widths})")
        return cfg

    def attention_heads(self, ch: int) -> tuple[int, int]:
        """``(heads, d_head)`` of a SpatialTransformer of width ``ch``."""
        if self.num_head_channels == -1:
            return self.num_heads, ch // self.num_heads
        return ch // self.num_head_channels, self.num_head_channels

    def spatial_transformer(self, ch: int) -> SpatialTransformer:
        heads, d_head = self.attention_heads(ch)
        return SpatialTransformer(ch, heads, d_head, depth=self.transformer_depth, dropout=self.dropout,
                                  context_dim=self.context_dim, use_linear=self.use_linear_in_transformer,
                                  use_checkpoint=self.use_checkpoint, norm_groups=self.norm_num_groups)

    def resblock(self, ch: int, out: int) -> ResBlock:
        return ResBlock(ch, self.model_channels * 4, out_channels=out, dropout=self.dropout,
                        use_checkpoint=self.use_checkpoint, norm_groups=self.norm_num_groups)


def build_time_embed(cfg: UNetConfig) -> nn.Sequential:
    """``time_embed``: Linear(C → 4C), SiLU, Linear(4C → 4C)."""
    emb = cfg.model_channels * 4
    return nn.Sequential(nn.Linear(cfg.model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))


def build_encoder(cfg: UNetConfig) -> tuple[nn.ModuleList, TimestepEmbedSequential, list[int]]:
    """Build ``input_blocks`` and ``middle_block``.

    Returns:
        ``(input_blocks, middle_block, chans)`` with ``chans[i]`` the width of input block i's output.
    """
    blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, cfg.model_channels, 3, padding=1))])
    chans = [cfg.model_channels]
    ch, ds = cfg.model_channels, 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            layers = [cfg.resblock(ch, mult * cfg.model_channels)]
            ch = mult * cfg.model_channels
            if ds in cfg.attention_resolutions:
                layers.append(cfg.spatial_transformer(ch))
            blocks.append(TimestepEmbedSequential(*layers))
            chans.append(ch)
        if level != len(cfg.channel_mult) - 1:
            blocks.append(TimestepEmbedSequential(Downsample(ch)))
            chans.append(ch)
            ds *= 2
    middle = TimestepEmbedSequential(cfg.resblock(ch, ch), cfg.spatial_transformer(ch), cfg.resblock(ch, ch))
    return blocks, middle, chans


def build_decoder(cfg: UNetConfig, chans: list[int]) -> tuple[nn.ModuleList, nn.Sequential]:
    """Build ``output_blocks`` (each reads the running features concatenated with one skip) and ``out``."""
    chans = list(chans)
    ch = chans[-1]
    ds = 2 ** (len(cfg.channel_mult) - 1)
    blocks = nn.ModuleList()
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            layers = [cfg.resblock(ch + chans.pop(), cfg.model_channels * mult)]
            ch = cfg.model_channels * mult
            if ds in cfg.attention_resolutions:
                layers.append(cfg.spatial_transformer(ch))
            if level and i == cfg.num_res_blocks:
                layers.append(Upsample(ch))
                ds //= 2
            blocks.append(TimestepEmbedSequential(*layers))
    out = nn.Sequential(normalization(ch, cfg.norm_num_groups), nn.SiLU(),
                        zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))
    return blocks, out


def set_gradient_checkpointing(module: nn.Module, enabled: bool) -> None:
    """Switch activation checkpointing of every ResBlock and transformer block inside ``module``.

    Checkpointing recomputes a block's activations in the backward pass instead of storing them: less
    memory, about a third more compute, the same gradients.
    """
    for m in module.modules():
        if isinstance(m, ResBlock):
            m.use_checkpoint = enabled
        elif isinstance(getattr(m, "checkpoint", None), bool):
            m.checkpoint = enabled


class UNetModel(nn.Module):
    """SD-1.x conditional UNet predicting the noise ε of a latent.

    Constructed from the reference YAML's ``unet_config.params`` (keyword arguments).
    """

    def __init__(self, **params):
        super().__init__()
        cfg = UNetConfig.from_params(**params)
        self.config = cfg
        self.model_channels = cfg.model_channels
        self.time_embed = build_time_embed(cfg)
        self.input_blocks, self.middle_block, chans = build_encoder(cfg)
        self.output_blocks, self.out = build_decoder(cfg, chans)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing of every ResBlock and transformer block (memory only)."""
        set_gradient_checkpointing(self, enabled)

    def encode(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor):
        """Run the encoder half: returns ``(h_middle, skips, emb)``."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        return self.middle_block(h, emb, context), hs, emb

    def decode(self, h: torch.Tensor, hs: list[torch.Tensor], emb: torch.Tensor,
               context: torch.Tensor) -> torch.Tensor:
        """Run the decoder half on the middle features and the skips (consumed from the end)."""
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, **_) -> torch.Tensor:
        """``(B, C, h, w)`` noisy latent, ``(B,)`` timesteps, ``(B, N, D)`` tokens → ``(B, C_out, h, w)``."""
        h, hs, emb = self.encode(x, timesteps, context)
        return self.decode(h, hs, emb, context)
