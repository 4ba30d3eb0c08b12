#!/usr/bin/env python
"""What bounds the demo's numbers, measured on a finished demo run (``python scripts/demo.py``):

1. the scorer's ceiling and floor on the synthetic benchmark: the test metrics of a perfect defect-free
   reconstruction decoded through the demo's finetuned autoencoder, and of a reconstruction that copies its
   input (defects included), beside the trained model and its untrained start from ``summary.json``;
2. how much the UNet's predicted noise moves when a control enters at each of its levels, for the untrained
   start and the trained model: the paper's routing feeds the middle block and the three deepest skips.

    python scripts/demo_diagnostics.py --work_dir runs/demo     # writes runs/demo/diagnostics.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", default="runs/demo", help="a finished demo run (%(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the cores other processes leave free)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    summary_file, start, trained = (work / "summary.json", work / "vlmdiff_tiny_start.safetensors",
                                    work / "train" / "checkpoints" / "last.ckpt")
    for f in (summary_file, start, trained):
        if not f.is_file():
            print(f"error: {f}: missing; run scripts/demo.py --work_dir {work} to the end first", file=sys.stderr)
            return 2
    summary = json.loads(summary_file.read_text())
    settings = summary.get("settings", {})
    data = work / "data" / "synthetic"
    if settings.get("data_path") or not (data / "synthetic_dataset.json").is_file():
        print(f"error: {work}: the bounds need the synthetic benchmark (this run used --data_path)", file=sys.stderr)
        return 2
    from vlmdiff.pipelines.demo import configure_cpu

    configure_cpu(args.threads)
    import torch

    from vlmdiff.config import DEMO_CONFIG
    from vlmdiff.data import build_dataset
    from vlmdiff.demo import control_sensitivity, reconstruction_bounds
    from vlmdiff.features import build_extractor
    from vlmdiff.model import create_model
    from utils.io import write_json

    size = int(settings.get("image_size", 128))
    models = {}
    for name, path in (("untrained start", start), ("trained", trained)):
        models[name] = create_model(settings.get("model_config") or DEMO_CONFIG)
        models[name].load_checkpoint(path)
        models[name].eval()
    extractor = build_extractor(settings.get("scorer", "effnet_lite0_s16"))
    bounds = reconstruction_bounds(models["trained"], extractor, data, image_size=size)
    ds = build_dataset("mvtec", data, "test", image_size=size)
    normal = torch.stack([ds[i]["jpg"] for i, r in enumerate(ds.records) if r.label == 0][:8])
    sensitivity = {name: control_sensitivity(m, normal) for name, m in models.items()}
    rows = {"ceiling: defect-free image through the autoencoder": bounds["ceiling"]["mean"],
            "trained model": summary["metrics"]["paper"]["mean"],
            "untrained start": summary["untrained_metrics"]["paper"]["mean"],
            "copy: the input through the autoencoder": bounds["copy"]["mean"]}
    print("paper-mode mean over classes (%):\n| reconstruction | AUROC_I | AUROC_P | AUPRO |\n|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {100 * m['AUROC_I']:.1f} | {100 * m['AUROC_P']:.1f} | {100 * m['AUPRO']:.1f} |")
    print("\nmean |Δε| of the UNet for a control of std 5 entering at one place (t = 999, normal test images):")
    places = list(next(iter(sensitivity.values())))
    print("| model | " + " | ".join(places) + " |\n|---|" + "---|" * len(places))
    for name, s in sensitivity.items():
        print(f"| {name} | " + " | ".join(f"{s[p]:.4f}" for p in places) + " |")
    write_json(work / "diagnostics.json", {"bounds": bounds, "control_sensitivity": sensitivity})
    print(f"\nwrote {work / 'diagnostics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
