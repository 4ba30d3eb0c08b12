"""Two-process CPU runs (gloo): DDP training through Lightning and a sharded test under torchrun (its maps equal
one process's with another batch size: every image's noise is its own)."""

import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import save_file

from tests.conftest import ROOT, TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff import testing
from vlmdiff.data.synthetic import generate
from vlmdiff.model import create_model


def run(args, tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_two_process_train_and_test(tmp_path):
    data = generate(tmp_path / "data", classes=("disc", "weave"), image_size=128, n_train=4, n_test_good=2,
                    n_test_defect=3)
    seed_everything(0)
    model = create_model(TINY_CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "init.safetensors"))
    common = ["--model_config", str(TINY_CONFIG), "--data_set", "mvtec", "--data_path", str(data),
              "--output_dir", str(tmp_path / "runs")]
    run(["train.py", "--resume_path", str(tmp_path / "init.safetensors"), *common, "--exp_name", "ddp",
         "--batch_size", "2", "--accumulate_grad_batches", "1", "--max_epochs", "1", "--num_workers", "0",
         "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "image_size=128", "progress_bar=false"], tmp_path)
    ckpt = tmp_path / "runs" / "ddp" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2  # 8 images, 2 processes x batch 2: two steps per process
    test_args = ["--resume_path", str(ckpt), *common, "--scorer", "effnet_lite0", "--batch_size", "2",
                 "--device", "cpu", "image_size=128", "num_workers=0", "ddim_steps=2"]
    out = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "test.py", *test_args,
               "--exp_name", "sharded"], tmp_path)
    assert "| **mean** |" in out
    single = [a if a != "2" or test_args[i - 1] != "--batch_size" else "3" for i, a in enumerate(test_args)]
    run(["test.py", *single, "--exp_name", "single"], tmp_path)  # one process, other batches: same maps
    a, b = (testing.load_results(tmp_path / "runs" / n) for n in ("sharded", "single"))
    assert list(a["filenames"]) == list(b["filenames"])
    np.testing.assert_array_equal(a["maps"], b["maps"])
    assert json.loads((tmp_path / "runs" / "sharded" / "results.json").read_text())["results"] == \
        json.loads((tmp_path / "runs" / "single" / "results.json").read_text())["results"]
    assert len(list((tmp_path / "runs" / "sharded" / "scores").glob("*.npz"))) == 5  # 10 images, batch 2
