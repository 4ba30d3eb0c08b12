"""The VLMDiff system: a latent diffusion model with a semantic-guided network (docs/design.md §3, §4, §5, §10).

``VLMDiff`` owns which parts are frozen (UNet encoder, autoencoder, CLIP), the training step (ε-prediction
MSE), the optimiser over the reference's trainable set (SGN + UNet ``output_blocks`` + ``out``) and the
test-time reconstruction (noise to t = 999, 10 DDIM steps with guidance). The networks themselves are
plain modules in ``ldm/`` and ``vlmdiff/sgn.py``.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Mapping, Sequence

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from ldm.models.ddim import ddim_sample, make_ddim_schedule
from ldm.modules.diffusion import SCHEDULE_BUFFERS, extract, make_beta_schedule, schedule_buffers
from ldm.modules.diffusion import q_sample as _q_sample
from ldm.modules.distributions import DiagonalGaussianDistribution
from vlmdiff.checkpoint import load_state_dict, load_strict
from vlmdiff.choices import START_MODES
from vlmdiff.config import instantiate, load_config
from vlmdiff.precision import autocast, check_precision, to_channels_last
from vlmdiff.optim import build_optimizer

log = logging.getLogger(__name__)

POSITION_IDS_KEY = "cond_stage_model.transformer.text_model.embeddings.position_ids"


class DiffusionWrapper(nn.Module):
    """Holds the UNet as ``diffusion_model`` (the ``model.diffusion_model.*`` checkpoint prefix)."""

    def __init__(self, diffusion_model: nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model


class VLMDiff(L.LightningModule):
    """Latent diffusion + semantic-guided network, conditioned on a caption and on the image itself.

    Constructor arguments are the reference YAML's ``model.params`` (unused LDM keys are accepted); a run's
    settings (``only_mid_control``, ``learning_rate``, ``seed``, ``optimizer``) reach them through
    :func:`create_model`'s ``params``. ``seed`` seeds every random draw of a training step
    (:meth:`step_generator`); ``optimizer``: ``"adamw"`` or ``"adamw8bit"`` (:mod:`vlmdiff.optim`).
    """

    def __init__(self, *, unet_config, control_stage_config, first_stage_config, cond_stage_config,
                 linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000,
                 beta_schedule: str = "linear", scale_factor: float = 0.18215, only_mid_control: bool = False,
                 first_stage_key: str = "jpg", cond_stage_key: str = "txt", control_key: str = "hint",
                 learning_rate: float = 1e-5, l_simple_weight: float = 1.0, original_elbo_weight: float = 0.0,
                 logvar_init: float = 0.0, parameterization: str = "eps", loss_type: str = "l2",
                 use_ema: bool = False, cond_stage_trainable: bool = False, conditioning_key: str = "crossattn",
                 scale_by_std: bool = False, channels: int = 4, image_size: int | None = None,
                 num_timesteps_cond: int = 1, log_every_t: int = 200, monitor: str | None = None,
                 seed: int = 0, optimizer: str = "adamw"):
        super().__init__()
        unsupported = {"parameterization": (parameterization, "eps"), "loss_type": (loss_type, "l2"),
                       "use_ema": (use_ema, False), "cond_stage_trainable": (cond_stage_trainable, False),
                       "conditioning_key": (conditioning_key, "crossattn"), "scale_by_std": (scale_by_std, False),
                       "num_timesteps_cond": (num_timesteps_cond, 1)}
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"{name}={value!r} is not supported (VLMDiff uses {supported!r})")
        self.num_timesteps = timesteps
        self.scale_factor = scale_factor
        self.only_mid_control = only_mid_control
        self.first_stage_key, self.cond_stage_key, self.control_key = first_stage_key, cond_stage_key, control_key
        self.learning_rate, self.seed, self.optimizer_name = learning_rate, seed, optimizer
        self.l_simple_weight, self.original_elbo_weight = l_simple_weight, original_elbo_weight
        self.channels = channels
        betas = make_beta_schedule(beta_schedule, timesteps, linear_start=linear_start, linear_end=linear_end)
        buffers = schedule_buffers(betas)
        for name in SCHEDULE_BUFFERS:
            self.register_buffer(name, buffers[name])
        self.register_buffer("logvar", torch.full((timesteps,), float(logvar_init)))
        self.register_buffer("lvlb_weights", buffers["lvlb_weights"], persistent=False)
        self.model = DiffusionWrapper(instantiate(unet_config, where="unet_config"))
        self.first_stage_model = instantiate(first_stage_config, where="first_stage_config")
        self.cond_stage_model = instantiate(cond_stage_config, where="cond_stage_config")
        self.control_model = instantiate(control_stage_config, where="control_stage_config")
        self.control_scales = [1.0] * 13
        self._freeze()

    # ----------------------------------------------------------------- parts and parameters
    def _freeze(self) -> None:
        """Autoencoder, CLIP and the UNet encoder (time_embed, input_blocks, middle_block) are frozen."""
        unet = self.model.diffusion_model
        for module in (self.first_stage_model, self.cond_stage_model, unet.time_embed, unet.input_blocks,
                       unet.middle_block):
            module.requires_grad_(False)
        self.first_stage_model.eval()
        self.cond_stage_model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.first_stage_model.eval()  # frozen parts stay in eval mode
        self.cond_stage_model.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """SGN (all) + UNet ``output_blocks`` + ``out``, in the reference's optimiser order."""
        unet = self.model.diffusion_model
        return [*self.control_model.parameters(), *unet.output_blocks.parameters(), *unet.out.parameters()]

    def configure_optimizers(self):
        """AdamW over :meth:`trainable_parameters` (``optimizer_name``: ``"adamw"``, fused on CUDA, or
        ``"adamw8bit"``; see :mod:`vlmdiff.optim`)."""
        return build_optimizer(self.trainable_parameters(), self.optimizer_name, lr=self.learning_rate)

    # ----------------------------------------------------------------- encoders
    @torch.no_grad()
    def get_learned_conditioning(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP tokens ``(B, 77, D)`` of the captions."""
        return self.cond_stage_model.encode(list(texts))

    @torch.no_grad()
    def encode_first_stage(self, x: torch.Tensor):
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, posterior, noise: torch.Tensor | None = None,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``z = scale_factor · sample(q(z|x))`` — a posterior sample, not its mean, as the reference."""
        return self.scale_factor * posterior.sample(noise=noise, generator=generator)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latent (and of the posterior and start noise) of an ``height × width`` image."""
        ae = self.first_stage_model
        factor = 2 ** (len(ae.encoder.down) - 1)
        if height % factor or width % factor:
            raise ValueError(f"image size {height}x{width} is not a multiple of the autoencoder's factor {factor}")
        return int(ae.embed_dim), height // factor, width // factor

    @torch.no_grad()
    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        return self.first_stage_model.decode(z / self.scale_factor)

    @torch.no_grad()
    def get_input(self, batch: Mapping, posterior_noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None):
        """Latent of ``batch["jpg"]`` and ``{"c_crossattn": [CLIP(txt)], "c_concat": [hint]}``.

        A batch that carries ``moments`` (posterior mean and log-variance) and ``context`` (caption tokens),
        from :mod:`vlmdiff.conditioning_cache`, skips the frozen encoders; the posterior is sampled all the same.
        """
        if "moments" in batch:
            posterior = DiagonalGaussianDistribution(batch["moments"].to(self.device).float())
        else:
            x = batch[self.first_stage_key].to(self.device, memory_format=torch.contiguous_format).float()
            posterior = self.encode_first_stage(x)
        z = self.get_first_stage_encoding(posterior, posterior_noise, generator)
        if "context" in batch:
            text = batch["context"].to(self.device).float()
        else:
            text = self.get_learned_conditioning(batch[self.cond_stage_key])
        hint = batch[self.control_key].to(self.device, memory_format=torch.contiguous_format).float()
        return z, {"c_crossattn": [text], "c_concat": [hint]}

    # ----------------------------------------------------------------- diffusion
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x0) if noise is None else noise
        return _q_sample(x0, t, noise, self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod)

    def apply_model(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: Mapping) -> torch.Tensor:
        """Predicted ε ``(B, C, h, w)``; ``cond = {"c_crossattn": [(B,N,D)], "c_concat": [(B,3,H,W)]}``."""
        context = torch.cat(list(cond["c_crossattn"]), dim=1)
        unet = self.model.diffusion_model
        if cond.get("c_concat") is None:
            return unet(x_noisy, t, context, control=None)
        hint = torch.cat(list(cond["c_concat"]), dim=1)
        control = self.control_model(x_noisy, hint, t, context)
        control = [c * s for c, s in zip(control, self.control_scales)]
        return unet(x_noisy, t, context, control=control, only_mid_control=self.only_mid_control)

    def p_losses(self, z: torch.Tensor, cond: Mapping, t: torch.Tensor, noise: torch.Tensor | None = None):
        """ε-prediction loss of docs/design.md §4 (plain MSE with logvar ≡ 0, ELBO weight 0)."""
        noise = torch.randn_like(z) if noise is None else noise
        eps = self.apply_model(self.q_sample(z, t, noise), t, cond)
        loss_simple = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
        logvar_t = self.logvar.to(z.device)[t]
        loss = self.l_simple_weight * (loss_simple / torch.exp(logvar_t) + logvar_t).mean()
        loss_vlb = (self.lvlb_weights[t] * loss_simple).mean()
        loss = loss + self.original_elbo_weight * loss_vlb
        return loss, {"train/loss_simple": loss_simple.mean(), "train/loss_vlb": loss_vlb, "train/loss": loss}

    def step_generator(self, batch_idx: int) -> torch.Generator:
        """Random draws of one training step depend only on (seed, epoch, batch, process): exact resumes."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        epoch = self.current_epoch if self._trainer is not None else 0
        seed = ((self.seed * 1_000_003 + epoch) * 1_000_003 + batch_idx) * 1_009 + rank
        return torch.Generator(device=self.device).manual_seed(seed % 2**63)

    def training_step(self, batch, batch_idx):
        g = self.step_generator(batch_idx)
        z, cond = self.get_input(batch, generator=g)
        t = torch.randint(0, self.num_timesteps, (z.shape[0],), device=self.device, generator=g).long()
        noise = torch.randn(z.shape, device=self.device, generator=g)
        loss, logs = self.p_losses(z, cond, t, noise)
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=True, batch_size=z.shape[0], sync_dist=True)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=z.shape[0])
        return loss

    # ----------------------------------------------------------------- test-time reconstruction
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, hints: torch.Tensor | None = None,
                    captions: Sequence[str] | None = None, *, ddim_steps: int = 10, guidance_scale: float = 9.0,
                    start_timestep: int = 999, start_mode: str = "reference", eta: float = 0.0,
                    noise: torch.Tensor | None = None, posterior_noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, return_ae_reconstruction: bool = False,
                    skip_redundant_guidance: bool = True, callback=None, precision: str = "fp32",
                    channels_last: bool = False) -> dict[str, torch.Tensor]:
        """Reconstruct normalised images through the diffusion model (docs/design.md §5), batched.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised images; ``hints`` default to the same tensor.
            captions: B strings (``""`` = no text guidance, the default).
            start_timestep: the noise level of the start latent ``x_T = q_sample(z, start_timestep)``.
            start_mode: ``"reference"`` keeps the full uniform DDIM grid (τ = 901 … 1 for 10 steps) whatever
                ``start_timestep`` is — the reference passes its start step where the sampler ignores it,
                so the first step treats the t = 999 latent as t = 901. ``"matched"`` runs only the DDIM
                steps ≤ ``start_timestep`` (the first one at the latent's own level).
            noise, posterior_noise: ``(B, 4, h, w)`` ε of ``q_sample`` and of the posterior sample
                (drawn from ``generator`` when None).
            skip_redundant_guidance: when every caption is ``""`` the conditional and unconditional
                branches are identical and guidance returns ε_c exactly; skip the second branch (False
                runs the reference's doubled batch anyway).
            precision: ``"fp32"`` (default: the paper's numbers), ``"bf16"`` or ``"fp16"``: autocast of the
                UNet + SGN and the autoencoder; the posterior sample, the DDIM update and every returned
                tensor stay float32 (:mod:`vlmdiff.precision`). The text encoder runs in float32.
            channels_last: store the model's 4-D weights (in place, for later calls too) and the inputs
                channels-last.

        Returns:
            ``{"samples": (B,3,H,W), "samples_latent", "z", "x_T"}`` (+ ``"reconstruction"``, the
            autoencoder round trip, when asked).
        """
        if start_mode not in START_MODES:
            raise ValueError(f"start_mode must be one of {START_MODES}, got {start_mode!r}")
        check_precision(precision)
        images = images.to(self.device).float()
        hints = images if hints is None else hints.to(self.device).float()
        if channels_last:
            to_channels_last(self)
            images = images.contiguous(memory_format=torch.channels_last)
            hints = hints.contiguous(memory_format=torch.channels_last)
        b = images.shape[0]
        captions = [""] * b if captions is None else list(captions)
        if len(captions) != b:
            raise ValueError(f"{len(captions)} captions for {b} images")
        if precision == "fp32":
            posterior = self.encode_first_stage(images)
        else:
            with autocast(precision, self.device):
                moments = self.first_stage_model.moments(images)
            posterior = DiagonalGaussianDistribution(moments.float())
        if posterior_noise is None:
            posterior_noise = torch.randn(posterior.mean.shape, generator=generator, device=self.device)
        z = self.get_first_stage_encoding(posterior, posterior_noise.to(self.device))
        if noise is None:
            noise = torch.randn(z.shape, generator=generator, device=self.device)
        t_start = torch.full((b,), start_timestep, device=self.device, dtype=torch.long)
        x_t = self.q_sample(z, t_start, noise.to(self.device))
        if channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        empty = self.empty_conditioning(b)
        text = empty if all(c == "" for c in captions) else self.get_learned_conditioning(captions)
        cond = {"c_crossattn": [text], "c_concat": [hints]}
        # With empty captions cond == uncond and guidance returns ε_c exactly: skip the duplicate pass.
        redundant = skip_redundant_guidance and torch.equal(text, empty)
        uncond = None if redundant else {"c_crossattn": [empty], "c_concat": [hints]}
        schedule = make_ddim_schedule(self.alphas_cumprod, ddim_steps, eta)
        last = len(schedule.timesteps) - 1
        if start_mode == "matched":
            below = (schedule.timesteps <= start_timestep).nonzero()[0]
            if len(below) == 0:
                raise ValueError(f"no DDIM timestep <= start_timestep={start_timestep}")
            last = int(below[-1])

        def eps_model(x, t, c):  # the networks under autocast, ε back in float32 for the DDIM update
            with autocast(precision, self.device):
                return self.apply_model(x, t, c).float()

        def decode(latent):
            with autocast(precision, self.device):
                return self.decode_first_stage(latent).float()

        latent = ddim_sample(eps_model, x_t, cond, schedule, uncond=uncond, guidance_scale=guidance_scale,
                             last_index=last, generator=generator, callback=callback)
        out = {"samples": decode(latent), "samples_latent": latent, "z": z, "x_T": x_t}
        if return_ae_reconstruction:
            out["reconstruction"] = decode(z)
        return out

    def empty_conditioning(self, batch_size: int) -> torch.Tensor:
        """CLIP tokens ``(batch_size, 77, D)`` of empty captions, computed once and kept on the model.

        The cache is keyed by the batch size and by the text encoder's tensors (storage, in-place version,
        dtype, device): loading weights into it, or moving or casting it, computes the tokens anew. The
        returned tensor is shared: do not modify it in place.
        """
        encoder = self.cond_stage_model
        state = tuple((t.data_ptr(), t._version, t.dtype, t.device)
                      for t in itertools.chain(encoder.parameters(), encoder.buffers()))
        cache = self.__dict__.setdefault("_empty_conditioning_cache", {})
        if batch_size not in cache or cache[batch_size][0] != state:
            cache[batch_size] = (state, self.get_learned_conditioning([""] * batch_size))
        return cache[batch_size][1]

    # ----------------------------------------------------------------- checkpoints
    def load_checkpoint(self, path: str | os.PathLike, *, strict: bool = True) -> None:
        """Load a VLMDiff checkpoint file (assembled or trained) with strict key checking."""
        load_weights(self, load_state_dict(path), strict=strict, source=str(path))


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True,
                 source: str = "state dict") -> None:
    """Strict loading that accepts files saved without CLIP's ``position_ids`` buffer (modern transformers
    no longer saves it; it is ``arange(77)`` either way) and names missing/unexpected/mis-shaped keys."""
    state_dict = dict(state_dict)
    own = model.state_dict()
    if POSITION_IDS_KEY in own and POSITION_IDS_KEY not in state_dict:
        state_dict[POSITION_IDS_KEY] = own[POSITION_IDS_KEY]
    load_strict(model, state_dict, source=source, strict=strict)


def create_model(path_or_config: str | os.PathLike | Mapping | DictConfig, *,
                 overrides: list[str] | None = None, params: Mapping | None = None) -> VLMDiff:
    """Build the model described by a config file or mapping (its ``model`` section, or the section itself).

    ``params``: a run's settings of the model (``only_mid_control``, ``learning_rate``, ``seed``,
    ``optimizer``), which replace the config's ``params``; each is logged with the config's value it replaces.
    """
    cfg = load_config(path_or_config, overrides)
    section = cfg.model if "model" in cfg else cfg
    where = str(path_or_config) if isinstance(path_or_config, (str, os.PathLike)) else "config"
    own = section.get("params") or {}
    for key, value in (params or {}).items():
        said = f" ({where} says {own[key]!r})" if key in own and own[key] != value else ""
        log.info("%s=%r from the run config%s", key, value, said)
    model = instantiate(section, where=where, **dict(params or {}))
    if not isinstance(model, VLMDiff):
        raise ValueError(f"{where}: model.target must name VLMDiff, got {type(model).__name__}")
    return model


__all__ = ["VLMDiff", "create_model", "load_state_dict", "load_weights", "extract"]
