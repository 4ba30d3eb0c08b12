"""Run configurations of the pipeline scripts: dataclass schemas, YAML files, flags and ``key=value`` overrides.

A run's settings are resolved in this order (later wins): the schema's defaults, the YAML file given with
``--config``, the command-line flags that were set explicitly, then ``key=value`` overrides. A misspelt key
or a value of the wrong type fails at load time naming the file and the key. The resolved configuration is
saved beside the run's outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from utils.io import write_text

T = TypeVar("T")


@dataclass
class DataRunConfig:
    """Settings shared by the runs that read a dataset with a model (training and testing)."""

    resume_path: str = ""
    model_config: str = "configs/vlmdiff.yaml"
    data_set: str = "mvtec"
    data_path: str = ""
    coco_part: int = 0
    classes: list[str] | None = None
    image_size: int = 256
    use_captions: bool = False
    caption_folder: str = ""
    # True: the SGN's controls reach the middle block and the three deepest skips only (what the paper's
    # training and test scripts set, whatever the model YAML says); False: every skip (ControlNet's routing)
    only_mid_control: bool = True
    exp_name: str = "run"
    output_dir: str = "runs"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.exp_name


def resolve_run_config(schema: type[T], *, config_file: str | os.PathLike | None = None,
                       flags: dict[str, Any] | None = None, overrides: list[str] | None = None) -> T:
    """Merge defaults ← YAML file ← explicit flags ← ``key=value`` overrides into a ``schema`` instance."""
    if not is_dataclass(schema):
        raise TypeError(f"{schema} is not a dataclass")
    cfg = OmegaConf.structured(schema)
    layers = []
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        layers.append((str(path), OmegaConf.load(path)))
    if flags:
        names = {f.name for f in fields(schema)}
        layers.append(("command-line flags", OmegaConf.create({k: v for k, v in flags.items()
                                                                if k in names and v is not None})))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"overrides must be key=value, got {bad}")
        layers.append(("overrides", OmegaConf.from_dotlist(list(overrides))))
    for where, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None)
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if key and key not in message:
                message = f"{key}: {message}"
            raise ValueError(f"{where}: {message}") from err
    return OmegaConf.to_object(cfg)


def save_run_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    write_text(path, OmegaConf.to_yaml(OmegaConf.structured(config)))
