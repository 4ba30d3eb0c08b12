#!/usr/bin/env python
"""Caption a dataset's images with a VLM and write the reference's caption files (docs/design.md §9).

    python captioner.py --data_set mvtec --data_path data/mvtec --vlm_model internvl \\
        --model_path models/InternVL3-8B-hf --prompt_type pd --batch_size 8
    python captioner.py --data_set realiad --data_path data/realiad --backend openai \\
        --api_base http://127.0.0.1:23333 --vlm_model internvl          # a vLLM / lmdeploy / SGLang server
    python captioner.py --data_set mvtec --data_path data/mvtec --backend template   # no VLM: class names

Output: ``<data_path>/../<data_set>_captions_<vlm>_<prompt_type>/`` (or --output_dir). Interrupted runs
resume where they stopped. Shards: ``--num_shards N --shard_index K`` (default from WORLD_SIZE / RANK, so
``torchrun --nproc_per_node 8 captioner.py ...`` captions on 8 GPUs). The endpoint's key, if it needs one,
is read from the OPENAI_API_KEY environment variable (never saved).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vlmdiff.captioning import BACKENDS, DTYPES, PROMPTS, build_captioner, resolve_prompt
from vlmdiff.data.captions import folder_name
from vlmdiff.run_config import resolve_run_config, save_run_config

log = logging.getLogger("captioner")
DATA_SETS = ("mvtec", "visa", "realiad", "coco", "custom")


@dataclass
class CaptionerConfig:
    data_set: str = "mvtec"
    data_path: str = ""
    coco_part: int = 0
    vlm_model: str | None = None  # name in the file names; default: template / model folder / served model
    backend: str = "transformers"
    model_path: str | None = None
    api_base: str | None = None
    api_model: str | None = None
    prompt_type: str = "pd"
    prompt: str | None = None  # custom prompt text; the folder name then says "custom"
    only_train_set: bool = False
    start_ind: int = 0  # train split only, as the reference
    end_ind: int | None = None  # None: to the end (the reference stops at 10000)
    batch_size: int = 8
    num_shards: int = 1
    shard_index: int = 0
    output_dir: str | None = None
    device: str = "auto"  # auto: cuda:<LOCAL_RANK> when CUDA is available, else cpu
    dtype: str = "auto"
    max_new_tokens: int = 1024
    trust_remote_code: bool = False
    timeout: float = 120.0
    retries: int = 3
    concurrency: int = 8
    resume: bool = True


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="run config YAML (CaptionerConfig fields)")
    p.add_argument("--data_set", choices=DATA_SETS)
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--prompt_type", choices=tuple(PROMPTS))
    p.add_argument("--dtype", choices=DTYPES)
    for name, kind in [("data_path", str), ("coco_part", int), ("vlm_model", str), ("model_path", str),
                       ("api_base", str), ("api_model", str), ("prompt", str), ("start_ind", int), ("end_ind", int),
                       ("batch_size", int), ("num_shards", int), ("shard_index", int), ("output_dir", str),
                       ("device", str), ("max_new_tokens", int), ("timeout", float),
                       ("retries", int), ("concurrency", int)]:
        p.add_argument(f"--{name}", type=kind)
    for name, help_ in [("only_train_set", "caption the train split only"),
                        ("trust_remote_code", "allow the model folder's own code")]:
        p.add_argument(f"--{name}", action="store_true", default=None, help=help_)
    p.add_argument("--no_resume", dest="resume", action="store_false", default=None,
                   help="start over instead of continuing an interrupted run")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    return p.parse_args(argv)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    from vlmdiff.captioning import run_captioning  # after the arguments: --help answers without torch
    from vlmdiff.data import build_dataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "overrides")}
    for key, env in (("num_shards", "WORLD_SIZE"), ("shard_index", "RANK")):
        if flags[key] is None and env in os.environ:
            flags[key] = int(os.environ[env])
    cfg = resolve_run_config(CaptionerConfig, config_file=args.config, flags=flags, overrides=args.overrides)
    from vlmdiff.validate import validate_captioner_config

    validate_captioner_config(cfg, DATA_SETS)
    prompt_type = "custom" if cfg.prompt else cfg.prompt_type
    prompt = resolve_prompt(cfg.data_set, cfg.prompt_type, cfg.prompt)
    backend = build_captioner(cfg.backend, model_path=cfg.model_path, api_base=cfg.api_base, api_model=cfg.api_model,
                              api_key=os.environ.get("OPENAI_API_KEY"), device=resolve_device(cfg.device),
                              dtype=cfg.dtype, max_new_tokens=cfg.max_new_tokens,
                              trust_remote_code=cfg.trust_remote_code, timeout=cfg.timeout, retries=cfg.retries,
                              concurrency=cfg.concurrency)
    cfg.vlm_model = cfg.vlm_model or backend.name.lower()
    root = Path(cfg.data_path).resolve()
    out = Path(cfg.output_dir or root.parent / folder_name(cfg.data_set, cfg.vlm_model, prompt_type))
    shard = "" if cfg.num_shards == 1 else f"_shard{cfg.shard_index}of{cfg.num_shards}"
    save_run_config(cfg, out / f"captioner_config{shard}.yaml")
    results = []
    for split in ("train",) if cfg.only_train_set else ("train", "test"):
        records = build_dataset(cfg.data_set, root, split, coco_part=cfg.coco_part).records
        start, end = (cfg.start_ind, cfg.end_ind) if split == "train" else (0, None)
        results.append(run_captioning(records, backend, prompt, out, split, cfg.data_set, cfg.vlm_model,
                                      batch_size=cfg.batch_size, shard_index=cfg.shard_index,
                                      num_shards=cfg.num_shards, start=start, end=end, resume=cfg.resume,
                                      coco_annotations_dir=root / "annotations"))
    print(f"captions of {cfg.data_set} by {cfg.vlm_model} ({cfg.backend}"
          f"{', NOT a VLM: class-name sentences' if cfg.backend == 'template' else ''}) in {out}")
    print(f"{'split':<6} {'range':>15} {'new':>7} {'resumed':>8} {'img/s':>8}  file")
    for r in results:
        name = r.captions_file.name if r.captions_file else "(empty shard)"
        span = f"[{r.start}, {r.end})"
        print(f"{r.split:<6} {span:>15} {r.captioned:>7} {r.resumed:>8} {r.images_per_s:>8.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
