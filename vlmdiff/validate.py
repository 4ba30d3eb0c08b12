"""Checks of a run's settings and input files before any work: before a model is built or a dataset read,
and before anything is written to the run folder.

Every failure raises :class:`ValueError` or :class:`FileNotFoundError` with one line naming the setting or
the file and what is wrong with it. The model is checked against its checkpoint on PyTorch's ``meta``
device (shapes only, no memory, well under a second for the full-size model) and the checkpoint's shapes
are read from its header (:func:`vlmdiff.checkpoint.checkpoint_shapes`), so a checkpoint that does not fit
the model config is refused without loading either.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmdiff.checkpoint import checkpoint_shapes
from vlmdiff.choices import AE_PERCEPTUAL
from vlmdiff.precision import PRECISIONS

log = logging.getLogger(__name__)

MIN_LATENT = 16  # the SGN's feature fusion normalises per instance: latents of at least 16×16


@dataclass(frozen=True)
class ModelFacts:
    """What a model config fixes about the runs it can do."""

    num_timesteps: int
    ae_factor: int  # image side / latent side
    unet_factor: int  # latent side / the UNet's coarsest side
    shapes: dict  # state-dict key -> shape

    @property
    def size_step(self) -> int:
        return self.ae_factor * self.unet_factor

    @property
    def min_image_size(self) -> int:
        step = self.size_step
        return -(-MIN_LATENT * self.ae_factor // step) * step


def model_facts(model_config: str) -> ModelFacts:
    """Build the model of ``model_config`` on the ``meta`` device and read its schedule, factors and shapes."""
    from vlmdiff.model import create_model

    path = Path(model_config)
    if not str(model_config):
        raise ValueError("model_config: not set (the model's YAML file)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model config not found (model_config)")
    try:
        with torch.device("meta"):
            model = create_model(path)
    except (ValueError, KeyError, FileNotFoundError):
        raise
    except Exception as err:  # a config whose values the model's layers refuse
        raise ValueError(f"{path}: not a valid model config ({type(err).__name__}: {err})") from err
    unet = model.model.diffusion_model
    n_down = sum(1 for name, _ in unet.input_blocks.named_children()
                 if type(unet.input_blocks[int(name)][0]).__name__ == "Downsample")
    return ModelFacts(num_timesteps=int(model.num_timesteps),
                      ae_factor=2 ** (len(model.first_stage_model.encoder.down) - 1), unet_factor=2 ** n_down,
                      shapes={k: tuple(v.shape) for k, v in model.state_dict().items()})


def check_checkpoint(path: str, facts: ModelFacts | None, *, setting: str = "checkpoint",
                     model_config: str = "") -> None:
    """The checkpoint exists, is readable, and (given the model's facts) its tensors fit the model's shapes."""
    if not str(path):
        raise ValueError(f"{setting}: not set (the checkpoint file)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found ({setting})")
    shapes = checkpoint_shapes(path)
    if shapes is None or facts is None:
        return
    own = facts.shapes
    optional = {"cond_stage_model.transformer.text_model.embeddings.position_ids"}
    mis = [f"{k}: file {shapes[k]} vs model {own[k]}" for k in own if k in shapes and shapes[k] != own[k]]
    missing = [k for k in own if k not in shapes and k not in optional]
    unexpected = [k for k in shapes if k not in own]
    if mis or missing or unexpected:
        parts = [f"{len(mis)} mis-shaped, e.g. {mis[0]}" if mis else "",
                 f"{len(missing)} missing, e.g. {missing[0]}" if missing else "",
                 f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else ""]
        raise ValueError(f"{path}: does not fit the model config {model_config} "
                         f"({'; '.join(p for p in parts if p)})")


def _int(cfg, key: str, low: int | None = None, high: int | None = None, *, optional: bool = False) -> None:
    value = getattr(cfg, key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{key}: must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{key}: must be <= {high}, got {value}")


def _choice(cfg, key: str, choices) -> None:
    value = getattr(cfg, key)
    if value not in choices:
        raise ValueError(f"{key}: must be one of {list(choices)}, got {value!r}")


def check_image_size(image_size: Any, facts: ModelFacts) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size: expected a positive integer, got {image_size!r}")
    step, low = facts.size_step, facts.min_image_size
    if image_size % step:
        near = sorted({max(low, image_size // step * step), max(low, -(-image_size // step) * step)})
        raise ValueError(f"image_size: {image_size} is not a multiple of {step} (the autoencoder's factor "
                         f"{facts.ae_factor} times the UNet's {facts.unet_factor}); e.g. {' or '.join(map(str, near))}")
    if image_size < low:
        raise ValueError(f"image_size: {image_size} is too small; the model needs at least {low} "
                         f"(latents of at least {MIN_LATENT}x{MIN_LATENT})")


def _device(value: str) -> None:
    if value == "auto":
        return
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"device: {value!r} is not a device (cpu, cuda, cuda:1 or auto)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {value!r} asked for, but no CUDA device is available")


def resolve_device(value: str) -> torch.device:
    """``auto`` → the process's GPU (``cuda:<LOCAL_RANK>``, 0 outside torchrun) when CUDA is available, else the
    CPU; otherwise the device named (checked)."""
    _device(value)
    if value != "auto":
        return torch.device(value)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else \
        torch.device("cpu")


def check_data(cfg, split: str) -> None:
    """The dataset root exists and holds the ``split`` of ``cfg.data_set`` in its expected layout."""
    from vlmdiff.data.datasets import check_layout

    if not cfg.data_path:
        raise ValueError("data_path: not set (the dataset root)")
    if not Path(cfg.data_path).is_dir():
        raise FileNotFoundError(f"{cfg.data_path}: dataset root not found (data_path)")
    check_layout(cfg.data_set, cfg.data_path, split, classes=cfg.classes, coco_part=cfg.coco_part)


def check_split_images(cfg, split: str, *, skip: bool | None = None) -> list[tuple[Path, str]]:
    """Every image (and mask) of the ``split`` is checked cheaply for readability (its header, and a PNG's
    checksums: :func:`vlmdiff.data.images.image_file_problem`), so that a corrupt file stops the run before a
    model is loaded or anything is written. An unreadable one raises naming it and why; with ``skip`` the
    ``(image, reason)`` list is returned instead, to be left out. ``skip=None``: the command offers no
    skipping (training)."""
    from vlmdiff.data.datasets import split_records, unreadable_images

    records = split_records(cfg.data_set, cfg.data_path, split, classes=cfg.classes, coco_part=cfg.coco_part)
    bad = unreadable_images(records)
    if bad and len(bad) == len(records):
        raise ValueError(f"{cfg.data_path}: none of the {len(records)} images of the {split} split can be read "
                         f"(first: {bad[0][0]}: {bad[0][1]})")
    if bad and not skip:
        first, reason = bad[0]
        more = f"; {len(bad) - 1} more unreadable" if len(bad) > 1 else ""
        hint = "; --skip_bad_images leaves unreadable images out" if skip is False else "; replace or remove it"
        raise ValueError(f"{first}: {reason}{more}{hint}")
    for image, reason in bad:
        log.warning("skipping unreadable image %s: %s", image, reason)
    return bad


def validate_test_config(cfg, *, need_data: bool = True, need_model: bool = True,
                         eval_only: bool = False) -> ModelFacts | None:
    """Check a :class:`vlmdiff.testing.TestConfig` before any work (see the module docstring).

    ``eval_only``: only the stored results of the run are read (no model, no dataset); the run must exist.
    """
    if eval_only:
        if not (cfg.run_dir / "run.json").is_file():
            raise FileNotFoundError(f"{cfg.run_dir}: no test run here to evaluate (exp_name, output_dir)")
        need_model = need_data = False
    from vlmdiff.features import EXTRACTORS
    from vlmdiff.metrics import MODES
    from vlmdiff.model import START_MODES

    for key in ("batch_size", "ddim_steps"):
        _int(cfg, key, 1)
    for key in ("num_workers", "start_ind", "gallery_per_class", "coco_part"):
        _int(cfg, key, 0)
    _int(cfg, "end_ind", 1, optional=True)
    if cfg.end_ind is not None and cfg.end_ind <= cfg.start_ind:
        raise ValueError(f"end_ind: must be greater than start_ind ({cfg.start_ind}), got {cfg.end_ind}")
    if not cfg.sigma >= 0:
        raise ValueError(f"sigma: must be >= 0, got {cfg.sigma}")
    _choice(cfg, "scorer", EXTRACTORS)
    _choice(cfg, "start_mode", START_MODES)
    _choice(cfg, "precision", PRECISIONS)
    _choice(cfg, "metrics_mode", MODES)
    _device(cfg.device)
    if cfg.scorer_weights and not Path(cfg.scorer_weights).is_file():
        raise FileNotFoundError(f"{cfg.scorer_weights}: scorer weights not found (scorer_weights)")
    if not need_model:
        return None
    if cfg.checkpoint and not Path(cfg.checkpoint).is_file():
        raise FileNotFoundError(f"{cfg.checkpoint}: checkpoint file not found (checkpoint)")
    facts = model_facts(cfg.model_config)
    _int(cfg, "start_timestep", 0, facts.num_timesteps - 1)
    _int(cfg, "ddim_steps", 1, facts.num_timesteps)
    check_image_size(cfg.image_size, facts)
    check_checkpoint(cfg.checkpoint, facts, model_config=cfg.model_config)
    if need_data:
        check_data(cfg, "test")
    return facts


def validate_train_config(cfg, *, resume_from: str | Path | None = None) -> ModelFacts:
    """Check a :class:`vlmdiff.training.TrainConfig` before any work; ``resume_from``: the run's own last
    checkpoint when the run resumes (then the start checkpoint is not read)."""
    for key in ("batch_size", "accumulate_grad_batches", "num_nodes", "log_every_n_steps"):
        _int(cfg, key, 1)
    _int(cfg, "max_epochs", 1, optional=True)
    _int(cfg, "every_n_epochs", 1, optional=True)
    for key in ("num_workers", "coco_part"):
        _int(cfg, key, 0)
    if not cfg.learning_rate > 0:
        raise ValueError(f"learning_rate: must be > 0, got {cfg.learning_rate}")
    facts = model_facts(cfg.model_config)
    check_image_size(cfg.image_size, facts)
    if resume_from is not None:
        check_checkpoint(str(resume_from), facts, setting="the run's last checkpoint", model_config=cfg.model_config)
    else:
        check_checkpoint(cfg.init_checkpoint, facts, setting="init_checkpoint", model_config=cfg.model_config)
    check_data(cfg, "train")
    check_split_images(cfg, "train")
    return facts


def check_perceptual(kind: str, lpips_vgg: str | None = None, lpips_lin: str | None = None) -> None:
    """The autoencoder finetuning's perceptual term is a known one, and LPIPS files come only with ``lpips``."""
    if kind not in AE_PERCEPTUAL:
        raise ValueError(f"perceptual: unknown term {kind!r}; valid: {', '.join(AE_PERCEPTUAL)}")
    if kind != "lpips" and (lpips_vgg or lpips_lin):
        raise ValueError(f"perceptual: {kind} replaces LPIPS, so lpips_vgg and lpips_lin must be left out "
                         "(they go with perceptual=lpips)")


def perceptual_in_use(kind: str, lpips_vgg: str | None) -> str:
    """The perceptual term a finetuning run trains with: ``lpips`` without its files is none."""
    return "none" if kind == "lpips" and not lpips_vgg else kind


def check_resumed_perceptual(cfg, saved: Path) -> None:
    """A run continued from its last checkpoint keeps the perceptual term it was trained with (``saved``: the
    run's ``ae_config.yaml``; a file written before the setting existed had ``lpips``)."""
    from omegaconf import OmegaConf

    old = OmegaConf.load(saved)
    before = perceptual_in_use(old.get("perceptual", "lpips"), old.get("lpips_vgg"))
    now = perceptual_in_use(cfg.perceptual, cfg.lpips_vgg)
    if before != now:
        raise ValueError(f"{saved}: this run was trained with perceptual term {before}, not {now} (perceptual); "
                         "continuing it would change its loss: use another --exp_name")


def validate_autoencoder_config(cfg) -> None:
    """Check the settings of an autoencoder finetuning run (``finetune_autoencoder.py``) before any work."""
    for key in ("batch_size", "accumulate", "devices"):
        _int(cfg, key, 1)
    _int(cfg, "max_steps", -1)
    if cfg.max_epochs != -1 or cfg.max_steps <= 0:  # -1: no epoch limit, allowed when max_steps bounds the run
        _int(cfg, "max_epochs", 1)
    for key in ("num_workers", "coco_part", "disc_start"):
        _int(cfg, key, 0)
    if cfg.learning_rate is not None and not cfg.learning_rate > 0:
        raise ValueError(f"learning_rate: must be > 0, got {cfg.learning_rate}")
    facts = model_facts(cfg.model_config)
    for key in ("image_size", "crop_size"):
        value = getattr(cfg, key)
        if key == "crop_size" and not value:  # None or 0: whole images
            continue
        _int(cfg, key, facts.ae_factor)
        if value % facts.ae_factor:
            raise ValueError(f"{key}: {value} is not a multiple of the autoencoder's factor {facts.ae_factor}")
    if cfg.crop_size and cfg.crop_size > cfg.image_size:
        raise ValueError(f"crop_size: {cfg.crop_size} is larger than image_size ({cfg.image_size})")
    check_perceptual(cfg.perceptual, cfg.lpips_vgg, cfg.lpips_lin)
    if bool(cfg.lpips_vgg) != bool(cfg.lpips_lin):
        raise ValueError("lpips_vgg, lpips_lin: go together (VGG16 weights and the LPIPS linear heads)")
    for key in ("lpips_vgg", "lpips_lin"):
        if getattr(cfg, key) and not Path(getattr(cfg, key)).is_file():
            raise FileNotFoundError(f"{getattr(cfg, key)}: weights not found ({key})")
    run = Path(cfg.output_dir) / cfg.exp_name
    if (run / "checkpoints" / "last.ckpt").is_file() and (run / "ae_config.yaml").is_file():
        check_resumed_perceptual(cfg, run / "ae_config.yaml")
    if cfg.init_autoencoder:
        check_checkpoint(cfg.init_autoencoder, None, setting="init_autoencoder")
    check_data(cfg, "train")
    check_split_images(cfg, "train")


def check_writable(path: str | Path, setting: str, *, folder: bool) -> None:
    """``path`` (a folder when ``folder``, else a file) can be created or replaced: it is of that kind when it
    exists, and its nearest existing folder (itself, for an existing folder) is writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kinds = ("a file", "a folder") if folder else ("a folder", "a file")
        raise ValueError(f"{path}: is {kinds[0]}, expected {kinds[1]} ({setting})")
    base = path if folder and path.is_dir() else path.parent
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{path}: cannot be created, {base} is a file ({setting})")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: cannot write here, {base} is not writable ({setting})")


def _meta_model(config: str, overrides=None, setting: str = "config"):
    """The model of ``config`` (and ``overrides``) on the ``meta`` device: its layout, no weights."""
    from vlmdiff.model import create_model

    path = Path(config)
    if not str(config):
        raise ValueError(f"{setting}: not set (the model's YAML file)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model config not found ({setting})")
    try:
        with torch.device("meta"):
            return create_model(path, overrides=list(overrides or []))
    except (ValueError, KeyError, FileNotFoundError):
        raise
    except Exception as err:  # a config whose values the model's layers refuse
        raise ValueError(f"{path}: not a valid model config ({type(err).__name__}: {err})") from err


def _meta_state(path: str | Path, setting: str) -> dict | None:
    """``{key: meta tensor}`` of a checkpoint's header (None: a legacy-format file, checked when loaded)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found ({setting})")
    shapes = checkpoint_shapes(path)
    return None if shapes is None else {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def validate_build_inputs(sd: str, ae: str | None, config: str, overrides, out: str, *,
                          sgn: str | None = None) -> None:
    """``build_model.py``'s inputs before any weights are read: the model config builds (on the ``meta``
    device), the Stable Diffusion and autoencoder checkpoints (and a pretrained SGN) provide every key the
    assembly copies, with the model's shapes (read from the files' headers, by the assembly's own rules:
    :func:`vlmdiff.assemble.assemble_state_dict`, :func:`vlmdiff.assemble.apply_pretrained_sgn`), and the
    output file can be written."""
    from vlmdiff.assemble import apply_pretrained_sgn, assemble_state_dict

    if Path(out).suffix not in (".safetensors", ".ckpt", ".pt", ".pth"):
        raise ValueError(f"{out}: the output must end in .safetensors or .ckpt (--out)")
    check_writable(out, "--out", folder=False)
    sd_state = _meta_state(sd, "--sd")
    ae_state = _meta_state(ae, "--ae") if ae else None
    sgn_state = _meta_state(sgn, "--sgn") if sgn else None
    model = _meta_model(config, overrides, "--model_config")
    if sd_state is None or (ae and ae_state is None):
        return
    if ae_state is not None:
        ae_state = {k: v for k, v in ae_state.items() if not k.startswith("loss.")}
    state, _ = assemble_state_dict(model, sd_state, ae_state, sd_source=str(sd), ae_source=str(ae or sd))
    if sgn_state is not None:
        apply_pretrained_sgn(state, sgn_state, source=str(sgn))


def validate_captioner_config(cfg) -> None:
    """Check a captioning run (``captioner.py``) before a VLM loads or a caption file is written: settings in
    range, the backend's model folder (its ``config.json`` parses) or endpoint, the dataset's splits and
    every image in them readable, and the output folder writable."""
    import json

    from vlmdiff.captioning.backends import BACKENDS, DTYPES
    from vlmdiff.captioning.prompts import PROMPTS
    from vlmdiff.data.datasets import check_layout, unreadable_split_images

    from vlmdiff.run_config import CAPTIONED_DATASETS

    _choice(cfg, "data_set", CAPTIONED_DATASETS)
    _choice(cfg, "backend", BACKENDS)
    _choice(cfg, "dtype", DTYPES)
    if not cfg.prompt:
        _choice(cfg, "prompt_type", PROMPTS)
    for key in ("batch_size", "num_shards", "max_new_tokens", "concurrency"):
        _int(cfg, key, 1)
    for key in ("coco_part", "start_ind", "retries"):
        _int(cfg, key, 0)
    _int(cfg, "shard_index", 0, cfg.num_shards - 1)
    _int(cfg, "end_ind", 1, optional=True)
    if cfg.end_ind is not None and cfg.end_ind <= cfg.start_ind:
        raise ValueError(f"end_ind: must be greater than start_ind ({cfg.start_ind}), got {cfg.end_ind}")
    if not cfg.timeout > 0:
        raise ValueError(f"timeout: must be > 0, got {cfg.timeout}")
    if cfg.device != "auto":
        _device(cfg.device)
    if cfg.backend == "transformers":
        if not cfg.model_path:
            raise ValueError("model_path: not set (a local model folder for the transformers backend; the template "
                             "backend writes class-name captions without a VLM)")
        folder = Path(cfg.model_path)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: model folder not found (model_path; give a local folder, nothing is "
                                    "downloaded)")
        config = folder / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{config}: the model folder has no config.json (model_path)")
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{config}: not a readable model config ({err})") from err
    elif cfg.backend == "openai":
        if not cfg.api_base:
            raise ValueError("api_base: not set (the endpoint of the openai backend, e.g. http://127.0.0.1:23333)")
        if not str(cfg.api_base).startswith(("http://", "https://")):
            raise ValueError(f"api_base: expected an http:// or https:// address, got {cfg.api_base!r}")
    if not cfg.data_path:
        raise ValueError("data_path: not set (the dataset root)")
    root = Path(cfg.data_path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found (data_path)")
    for split in ("train",) if cfg.only_train_set else ("train", "test"):
        check_layout(cfg.data_set, root, split, coco_part=cfg.coco_part)
        bad = unreadable_split_images(cfg.data_set, root, split, coco_part=cfg.coco_part, masks=False)
        if bad:
            more = f"; {len(bad) - 1} more unreadable" if len(bad) > 1 else ""
            raise ValueError(f"{bad[0][0]}: {bad[0][1]}{more}; replace or remove it")
    check_writable(cfg.output_dir or root.resolve().parent, "output_dir", folder=True)
