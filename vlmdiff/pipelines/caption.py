"""Captioning (``captioner.py``, ``vlmdiff caption``): ``Config`` and ``run(cfg)``.

Imports torch only inside :func:`run`, so the command line's ``--help`` answers without it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vlmdiff.captioning import build_captioner, resolve_prompt
from vlmdiff.data.captions import folder_name
from vlmdiff.run_config import CaptionerConfig as Config
from vlmdiff.run_config import save_run_config

__all__ = ["Config", "run"]

def run(cfg: Config) -> int:
    """Caption the data set of ``cfg``; 0 when done."""
    from vlmdiff.captioning import run_captioning  # here: --help answers without torch
    from vlmdiff.data import build_dataset
    from vlmdiff.validate import resolve_device, validate_captioner_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_captioner_config(cfg)
    prompt_type = "custom" if cfg.prompt else cfg.prompt_type
    prompt = resolve_prompt(cfg.data_set, cfg.prompt_type, cfg.prompt)
    backend = build_captioner(cfg.backend, model_path=cfg.model_path, api_base=cfg.api_base, api_model=cfg.api_model,
                              api_key=os.environ.get("OPENAI_API_KEY"), device=str(resolve_device(cfg.device)),
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
