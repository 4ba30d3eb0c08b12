"""Pretraining a small latent diffusion UNet on general photographs: the demo's stand-in for Stable Diffusion.

The paper starts from Stable Diffusion 1.5, a UNet that already denoises natural-image latents, and trains
only the semantic-guided network and the UNet decoder on the normal images of a dataset. A toy model trained
from random weights for a few hundred updates learns nothing usable from a t = 999 start, so the demo starts,
like the paper, from a pretrained UNet: :func:`pretrain_unet` trains the whole UNet of a (tiny) VLMDiff
configuration with the ε-prediction loss on latents of photographs, the autoencoder and the text encoder
frozen, and :func:`sd_layout_state_dict` writes the result in Stable Diffusion's key layout, so that
``build_model.py --sd`` consumes it exactly as it consumes SD-1.5.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch.utils.data import Dataset

from ldm.modules.unet import UNetModel
from vlmdiff.assemble import SGN_START_PREFIXES
from vlmdiff.model import VLMDiff
from vlmdiff.optim import warmup_cosine_to_tenth

log = logging.getLogger(__name__)

# the demo's stand-in for SD-1.5: configs/tiny_demo.yaml's UNet pretrained by scripts/pretrain_tiny_diffusion.py
BUNDLED_TINY_SD = Path(__file__).parent / "assets" / "tiny_sd.safetensors"
SD_PREFIXES = ("model.diffusion_model.", "cond_stage_model.", "first_stage_model.")


@torch.no_grad()
def encode_bank(model: VLMDiff, dataset: Dataset, *, batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """Posterior parameters ``(N, 2·C, h, w)`` (mean and log-variance) of every ``jpg`` of ``dataset``.

    Latents are sampled from them afresh at every use, as training samples the posterior of every image.
    """
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encoding photographs", disable=not progress):
        x = torch.stack([dataset[i]["jpg"] for i in range(start, min(start + batch_size, len(dataset)))])
        posterior = model.encode_first_stage(x.to(model.device).float())
        out.append(torch.cat([posterior.mean, posterior.logvar], dim=1).cpu())
    return torch.cat(out)


def sample_latents(model: VLMDiff, moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``scale_factor ·`` a posterior sample of each row of ``moments`` (see :func:`encode_bank`)."""
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    eps = torch.randn(mean.shape, generator=generator, device=mean.device)
    return model.scale_factor * (mean + std * eps)


def denoising_error(model: VLMDiff, moments: torch.Tensor, *, timesteps=(100, 400, 700, 999), seed: int = 0,
                    caption: str = "", hints: torch.Tensor | None = None) -> dict[int, float]:
    """Mean squared error of the predicted noise at fixed ``timesteps`` on held-out latents: the UNet alone,
    or, with ``hints`` (the images of ``moments``), the UNet steered by the SGN seeing them.

    The same latents and noise for every call with the same ``seed``: comparable across weights.
    """
    unet = model.model.diffusion_model
    modes = {m: m.training for m in model.modules()}
    model.eval()
    g = torch.Generator().manual_seed(seed)
    z = sample_latents(model, moments, g).to(model.device)
    context = model.get_learned_conditioning([caption] * len(z))
    out = {}
    with torch.no_grad():
        for t in timesteps:
            noise = torch.randn(z.shape, generator=g).to(model.device)
            tt = torch.full((len(z),), int(t), device=model.device, dtype=torch.long)
            x_t = model.q_sample(z, tt, noise)
            if hints is None:
                eps = UNetModel.forward(unet, x_t, tt, context)
            else:
                eps = model.apply_model(x_t, tt, {"c_crossattn": [context], "c_concat": [hints.to(model.device)]})
            out[int(t)] = float(((eps - noise) ** 2).mean())
    for m, mode in modes.items():
        m.training = mode
    return out


def pretrain_unet(model: VLMDiff, moments: torch.Tensor, *, steps: int, batch_size: int = 32,
                  learning_rate: float = 1e-3, warmup: int = 100, caption: str = "", seed: int = 0,
                  eval_moments: torch.Tensor | None = None, eval_every: int = 1000,
                  on_eval: Callable[[int], None] | None = None,
                  progress: bool = True) -> list[tuple[int, dict[int, float]]]:
    """Train the whole UNet of ``model`` (encoder included) as a latent diffusion model.

    ε-prediction MSE at uniform timesteps (the paper's training loss), AdamW with a linear warm-up and a
    cosine decay to a tenth, batches drawn with replacement from ``moments`` (:func:`encode_bank`) by a
    generator seeded with ``seed``; every latent is a fresh posterior sample. The caption is the same for
    every image (``""``: what an unconditioned test run feeds).

    Returns:
        ``[(step, denoising_error(eval_moments))]`` every ``eval_every`` updates and at the end (empty
        without ``eval_moments``); ``on_eval(step)`` is called at the same points (to save snapshots).
    """
    unet = model.model.diffusion_model
    unet.requires_grad_(True)
    unet.set_gradient_checkpointing(False)  # memory is not the limit of a tiny UNet; recomputation is time
    context = model.get_learned_conditioning([caption]).expand(batch_size, -1, -1)

    def predict(x_t, t, idx):
        return UNetModel.forward(unet, x_t, t, context)

    def error():
        return None if eval_moments is None else denoising_error(model, eval_moments, caption=caption)

    return _train_denoiser(model, unet, list(unet.parameters()), moments, predict, error, steps=steps,
                           batch_size=batch_size, learning_rate=learning_rate, warmup=warmup, min_timestep=0,
                           seed=seed, eval_every=eval_every, on_eval=on_eval, desc="UNet pretraining",
                           label="held-out noise MSE", progress=progress)


def _train_denoiser(model: VLMDiff, module: torch.nn.Module, params: list, moments: torch.Tensor,
                    predict: Callable, error: Callable[[], dict | None], *, steps: int, batch_size: int,
                    learning_rate: float, warmup: int, min_timestep: int, seed: int, eval_every: int,
                    on_eval: Callable[[int], None] | None, desc: str, label: str,
                    progress: bool) -> list[tuple[int, dict[int, float]]]:
    """The loop both pretrainings share: ε-prediction MSE of ``predict(x_t, t, batch indices)`` on fresh
    posterior samples of ``moments`` at timesteps from ``[min_timestep, T)``, AdamW (no weight decay) with a
    linear warm-up and a cosine decay to a tenth, gradient norm clipped at 1, draws from a generator seeded
    with ``seed``; ``error()`` (and ``on_eval``) every ``eval_every`` updates and at the end. ``module`` is in
    training mode during the loop."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = warmup_cosine_to_tenth(opt, steps, warmup)
    g = torch.Generator().manual_seed(seed)
    history = []

    def evaluate(step: int) -> None:
        err = error()
        if err is not None:
            history.append((step, err))
            log.info("step %d: %s %s", step, label, {t: round(v, 4) for t, v in err.items()})
        if on_eval is not None:
            on_eval(step)

    module.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        if step % eval_every == 0:
            evaluate(step)
        idx = torch.randint(0, len(moments), (batch_size,), generator=g)
        z = sample_latents(model, moments[idx], g).to(model.device)
        t = torch.randint(min_timestep, model.num_timesteps, (batch_size,), generator=g).to(model.device)
        noise = torch.randn(z.shape, generator=g).to(model.device)
        loss = ((predict(model.q_sample(z, t, noise), t, idx) - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    evaluate(steps)
    module.eval()
    return history


def pretrain_sgn(model: VLMDiff, images: torch.Tensor, moments: torch.Tensor, *, steps: int, batch_size: int = 8,
                 learning_rate: float = 1e-3, warmup: int = 100, min_timestep: int = 500, caption: str = "",
                 seed: int = 0, eval_images: torch.Tensor | None = None, eval_moments: torch.Tensor | None = None,
                 eval_every: int = 500, on_eval: Callable[[int], None] | None = None,
                 progress: bool = True) -> list[tuple[int, dict[int, float]]]:
    """Train what VLMDiff trains — the SGN and the UNet decoder — on photographs, each image its own hint.

    A generic start for the SGN, as a ControlNet pretrained for Stable Diffusion is: the SGN learns to carry
    an image's appearance into the UNet through the model's routing (``model.only_mid_control``), so that a
    short training on a dataset's normal images starts from an SGN that already steers the reconstruction.
    ε-prediction MSE at timesteps drawn uniformly from ``[min_timestep, T)`` (below it the noisy latent
    itself carries the image and the UNet needs no guidance; docs/design.md §16), AdamW with a linear warm-up
    and a cosine decay to a tenth, gradient norm clipped at 1, batches drawn with replacement by a generator
    seeded with ``seed``, every latent a fresh posterior sample of ``moments`` (:func:`encode_bank` of
    ``images``).

    Returns ``[(step, denoising_error(eval_moments, hints=eval_images))]`` every ``eval_every`` updates and
    at the end (empty without ``eval_moments``); ``on_eval(step)`` is called at the same points.
    """
    params = model.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
    model.model.diffusion_model.set_gradient_checkpointing(False)
    model.control_model.set_gradient_checkpointing(False)
    context = model.get_learned_conditioning([caption]).expand(batch_size, -1, -1)
    timesteps = (min_timestep, (min_timestep + 999) // 2, 999)

    def predict(x_t, t, idx):
        return model.apply_model(x_t, t, {"c_crossattn": [context], "c_concat": [images[idx].to(model.device)]})

    def error():
        if eval_moments is None:
            return None
        return denoising_error(model, eval_moments, caption=caption, hints=eval_images, timesteps=timesteps)

    return _train_denoiser(model, model, params, moments, predict, error, steps=steps, batch_size=batch_size,
                           learning_rate=learning_rate, warmup=warmup, min_timestep=min_timestep, seed=seed,
                           eval_every=eval_every, on_eval=on_eval, desc="SGN pretraining",
                           label="held-out noise MSE with the SGN", progress=progress)


def sgn_state_dict(model: VLMDiff, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """What :func:`pretrain_sgn` trains — the SGN and the UNet decoder — under the model's own keys."""
    return {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in model.state_dict().items() if k.startswith(SGN_START_PREFIXES)}


def sd_layout_state_dict(model: VLMDiff, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The UNet, text encoder and autoencoder of ``model`` under Stable Diffusion's checkpoint keys."""
    state = model.state_dict()
    return {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in state.items() if k.startswith(SD_PREFIXES)}


def load_sd_layout(model: VLMDiff, state: Mapping[str, torch.Tensor]) -> None:
    """Load an SD-layout state dict (:func:`sd_layout_state_dict`) into the matching parts of ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k.startswith(SD_PREFIXES) and k not in state
               and not k.endswith("embeddings.position_ids")]
    if missing:
        raise ValueError(f"{len(missing)} key(s) missing, e.g. {missing[:3]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own}, strict=False)
