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

import logging
import os
import sys
from pathlib import Path

from vlmdiff.captioning import build_captioner, resolve_prompt
from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.data.captions import folder_name
from vlmdiff.run_config import CaptionerConfig, save_run_config

log = logging.getLogger("captioner")


def command_line(prog=None) -> ConfigCommandLine:
    """Every CaptionerConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(CaptionerConfig, prog=prog, description=__doc__)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def main(argv=None, prog=None) -> int:
    cli = command_line(prog)
    args = cli.parse_args(argv)
    flags = cli.flags(args)
    for key, env in (("num_shards", "WORLD_SIZE"), ("shard_index", "RANK")):
        if flags[key] is None and env in os.environ:
            flags[key] = int(os.environ[env])
    cfg = cli.resolve(args, flags)
    return run(cfg)


def run(cfg: CaptionerConfig) -> int:
    """Caption the data set of ``cfg``; 0 when done (:mod:`vlmdiff.pipelines.caption`)."""
    from vlmdiff.captioning import run_captioning  # after the settings: --help answers without torch
    from vlmdiff.data import build_dataset
    from vlmdiff.validate import validate_captioner_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_captioner_config(cfg)
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
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
