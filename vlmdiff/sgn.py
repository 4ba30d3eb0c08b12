"""Semantic-guided network (SGN) with its semantic feature fusion (SFF) block, and the controlled UNet.

docs/design.md §3.3, §3.4. The SGN is a trainable copy of the UNet encoder that also sees the input
image (the "hint"); its 13 outputs are added to the frozen UNet's middle block and skips.
"""

from __future__ import annotations

import torch
from torch import nn

from ldm.modules.unet import (TimestepEmbedSequential, UNetConfig, UNetModel, build_encoder,
                              build_time_embed, set_gradient_checkpointing, timestep_embedding)
from ldm.modules.attention import zero_module

# The SFF reads the zero-conv outputs of input blocks 6, 7, 8 (the level-1 → level-2 Downsample and
# level 2's two blocks) and adds them, downsampled, to those of blocks 9, 10, 11 (level 3).
SFF_SOURCES = (6, 7, 8)
SFF_TARGETS = (9, 10, 11)


def sff_branch(in_channels: int, out_channels: int) -> nn.Sequential:
    """``down<I><J>``: zero-initialised 3×3 stride-2 conv (no bias) → InstanceNorm2d → SiLU."""
    conv = zero_module(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False))
    return nn.Sequential(conv, nn.InstanceNorm2d(out_channels), nn.SiLU())


def hint_block(hint_channels: int, model_channels: int) -> TimestepEmbedSequential:
    """Eight 3×3 convs with SiLU between them, three of stride 2 (image → latent resolution)."""
    widths = [hint_channels, 16, 16, 32, 32, 96, 96, 256]
    strides = [1, 1, 2, 1, 2, 1, 2]
    layers: list[nn.Module] = []
    for c_in, c_out, stride in zip(widths[:-1], widths[1:], strides):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.SiLU()]
    layers.append(zero_module(nn.Conv2d(256, model_channels, 3, padding=1)))
    return TimestepEmbedSequential(*layers)


class SemanticGuidedNetwork(nn.Module):
    """SGN: ``time_embed``, ``input_blocks``, ``zero_convs``, ``input_hint_block``, ``middle_block``,
    ``middle_block_out`` and the nine SFF convs ``down11 … down33`` (state-dict order of the reference).

    The SFF widths are derived from ``channel_mult`` (``in`` = width of input block 5+I, ``out`` = width of
    input block 8+J), which gives the reference's 640→1280 / 1280→1280 at ``model_channels = 320``.
    """

    def __init__(self, **params):
        super().__init__()
        params = {k: v for k, v in params.items() if k != "out_channels"}
        cfg = UNetConfig.from_params(**params)
        if len(cfg.channel_mult) != 4 or cfg.num_res_blocks != 2:
            raise ValueError("the SFF block is wired to input blocks 6..11: it needs 4 levels "
                             f"(channel_mult) and num_res_blocks=2, got {list(cfg.channel_mult)} and "
                             f"{cfg.num_res_blocks}")
        self.config = cfg
        self.model_channels = cfg.model_channels
        self.time_embed = build_time_embed(cfg)
        self.input_blocks, middle_block, chans = build_encoder(cfg)
        self.zero_convs = nn.ModuleList(
            TimestepEmbedSequential(zero_module(nn.Conv2d(c, c, 1))) for c in chans)
        self.input_hint_block = hint_block(cfg.hint_channels, cfg.model_channels)
        self.middle_block = middle_block  # registered here: the reference's state-dict order
        self.middle_block_out = TimestepEmbedSequential(zero_module(nn.Conv2d(chans[-1], chans[-1], 1)))
        for i, src in enumerate(SFF_SOURCES, start=1):
            for j, dst in enumerate(SFF_TARGETS, start=1):
                self.add_module(f"down{i}{j}", sff_branch(chans[src], chans[dst]))

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing of the SGN's ResBlocks and transformer blocks (memory only)."""
        set_gradient_checkpointing(self, enabled)

    def sff(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Fuse: ``outs[8+J] ← SiLU(outs[8+J] + Σ_I down<I><J>(outs[5+I]))`` on the pre-fusion values."""
        fused = list(outs)
        for j, dst in enumerate(SFF_TARGETS, start=1):
            acc = outs[dst]
            for i, src in enumerate(SFF_SOURCES, start=1):
                acc = acc + getattr(self, f"down{i}{j}")(outs[src])
            fused[dst] = torch.nn.functional.silu(acc)
        return fused

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                context: torch.Tensor, **_) -> list[torch.Tensor]:
        """Controls for the UNet.

        Args:
            x: ``(B, C, h, w)`` noisy latent (the UNet's own input).
            hint: ``(B, 3, 8h, 8w)`` normalised image.
            timesteps: ``(B,)`` integer timesteps.
            context: ``(B, N, D)`` caption tokens.

        Returns:
            13 tensors: the zero-conv outputs of the 12 input blocks (9–11 after SFF) and the middle one.
        """
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        guided_hint = self.input_hint_block(hint, emb, context)
        outs, h = [], x
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided_hint  # the hint joins after the first conv and flows to every block
            outs.append(zero_conv(h, emb, context))
        outs = self.sff(outs)
        h = self.middle_block(h, emb, context)  # runs on the un-fused features
        outs.append(self.middle_block_out(h, emb, context))
        return outs


class ControlledUnetModel(UNetModel):
    """The SD UNet whose middle block and skips receive SGN controls (docs/design.md §3.4).

    The encoder half runs without gradient (it is frozen; the decoder is trained). With
    ``only_mid_control=True`` — what the reference's training and test scripts set — the control is
    added to the middle block **and** to the three deepest skips (the SFF outputs), despite the name.
    With ``control=None`` it is the plain SD UNet.
    """

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                control: list[torch.Tensor] | None = None, only_mid_control: bool = False,
                **_) -> torch.Tensor:
        with torch.no_grad():
            h, hs, emb = self.encode(x, timesteps, context)
        if control is None:
            return self.decode(h, hs, emb, context)
        control = list(control)
        h = h + control.pop()
        n_controlled = len(SFF_TARGETS) if only_mid_control else len(self.output_blocks)
        for i, block in enumerate(self.output_blocks):
            skip = hs.pop()
            if i < n_controlled:
                skip = skip + control.pop()
            h = block(torch.cat([h, skip], dim=1), emb, context)
        return self.out(h)
