"""Model configuration files: load (OmegaConf), validate and instantiate ``target``/``params`` sections.

The structure is the reference's ``models/vlmdiff.yaml``: ``model.target`` + ``model.params`` with
``unet_config``, ``control_stage_config``, ``first_stage_config`` and ``cond_stage_config`` sections.
The reference's own class paths (``sgn.sgn.VLMDiff`` …) are accepted as aliases, so its YAML builds
the identical model unchanged.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig, OmegaConf

# target string -> "module:attribute" of this project (explicit; anything else is refused)
# configs/tiny.yaml: the CPU-sized model of the tests and the tiny golden tensors
TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
# configs/tiny_demo.yaml: the demo's model (tiny.yaml with 8-group GroupNorms), which the bundled diffusion start
# and the tiny pretraining scripts use
DEMO_CONFIG = TINY_CONFIG.with_name("tiny_demo.yaml")

TARGETS = {
    "vlmdiff.model.VLMDiff": "vlmdiff.model:VLMDiff",
    "vlmdiff.sgn.SemanticGuidedNetwork": "vlmdiff.sgn:SemanticGuidedNetwork",
    "vlmdiff.sgn.ControlledUnetModel": "vlmdiff.sgn:ControlledUnetModel",
    "ldm.modules.unet.UNetModel": "ldm.modules.unet:UNetModel",
    "ldm.models.autoencoder.AutoencoderKL": "ldm.models.autoencoder:AutoencoderKL",
    "ldm.modules.encoders.FrozenCLIPEmbedder": "ldm.modules.encoders:FrozenCLIPEmbedder",
    "torch.nn.Identity": "torch.nn:Identity",
}
# The reference implementation's class paths.
REFERENCE_ALIASES = {
    "sgn.sgn.VLMDiff": "vlmdiff.model.VLMDiff",
    "sgn.sgn.SemanticGuidedNetwork": "vlmdiff.sgn.SemanticGuidedNetwork",
    "sgn.sgn.ControlledUnetModel": "vlmdiff.sgn.ControlledUnetModel",
    "ldm.modules.diffusionmodules.openaimodel.UNetModel": "ldm.modules.unet.UNetModel",
    "ldm.modules.encoders.modules.FrozenCLIPEmbedder": "ldm.modules.encoders.FrozenCLIPEmbedder",
}


def load_config(source: str | os.PathLike | Mapping | DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """Read a YAML file (or take a mapping) and apply ``key=value`` dot-list overrides.

    A file with a top-level ``base: <file>`` (relative to its own folder) is that file with the rest of its
    keys merged on top (``configs/tiny_demo.yaml``: ``tiny.yaml`` with two settings changed).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            cfg = OmegaConf.load(path)
        except Exception as err:
            raise ValueError(f"{path}: not a valid YAML config ({err})") from err
        if isinstance(cfg, DictConfig) and "base" in cfg:
            base = path.parent / str(cfg.pop("base"))
            if base.resolve() == path.resolve():
                raise ValueError(f"{path}: base names the file itself")
            cfg = OmegaConf.merge(load_config(base), cfg)
    else:
        cfg = OmegaConf.create(OmegaConf.to_container(source) if isinstance(source, DictConfig) else dict(source))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def resolve_target(target: str):
    """The class named by a config's ``target`` (this project's names or the reference's)."""
    name = REFERENCE_ALIASES.get(target, target)
    if name not in TARGETS:
        valid = sorted(TARGETS) + sorted(REFERENCE_ALIASES)
        raise ValueError(f"unknown target {target!r}; valid targets: {valid}")
    module, attr = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def instantiate(section: Mapping | DictConfig, *, where: str = "config", **extra):
    """Build ``target(**params, **extra)`` from a ``{target, params}`` section."""
    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    if "target" not in section:
        raise KeyError(f"{where}: missing 'target'")
    cls = resolve_target(section["target"])
    params = dict(section.get("params") or {})
    params.update(extra)
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"{where} ({section['target']}): {err}") from err
