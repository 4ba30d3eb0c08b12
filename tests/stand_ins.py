"""Cheap stand-ins for the model and the scorer, for tests of the result bookkeeping around them."""

import torch
import torch.nn.functional as F
from torch import nn


class NoisyCopy(nn.Module):
    """Stands in for VLMDiff: the 'reconstruction' is the image plus its upsampled start noise."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def latent_shape(self, height, width):
        return 4, height // 8, width // 8

    def reconstruct(self, images, hints=None, captions=None, *, noise, posterior_noise, **_):
        bump = F.interpolate(noise[:, :3] + posterior_noise[:, 1:], size=images.shape[-2:], mode="nearest")
        return {"samples": images + 0.5 * bump}


def extractor(x):
    """Two 'feature levels': the image and its 4×4 average."""
    return [x, F.avg_pool2d(x, 4)]
