"""Bad inputs to the command-line tools: exit status 2, one line on stderr naming the file or the setting,
and no run folder left behind. The CLIs run in-process (``cli_main(main, argv)``) on the tiny model."""

import json
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vlmdiff.cli import build_model as build_cli
from vlmdiff.cli import captioner as caption_cli
from vlmdiff.cli import finetune_autoencoder as ae_cli
from vlmdiff.cli import test as test_cli
from vlmdiff.cli import train as train_cli
from vlmdiff.pipelines import test as test_stage
from tests.conftest import FULL_CONFIG, TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff.data.synthetic import generate
from vlmdiff.errors import cli_main
from vlmdiff.model import create_model
from vlmdiff.run_config import save_run_config
from vlmdiff import testing


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny data (128 px, one class), a tiny checkpoint in both formats, broken files, and a finished-looking
    test run (its saved settings and thresholds) to predict with."""
    tmp = tmp_path_factory.mktemp("bad")
    data = generate(tmp / "data", classes=("disc",), image_size=128, n_train=2, n_test_good=1, n_test_defect=1)
    seed_everything(0)
    sd = {k: v.contiguous() for k, v in create_model(TINY_CONFIG).state_dict().items()}
    save_file(sd, str(tmp / "tiny.safetensors"))
    torch.save({"state_dict": sd}, tmp / "tiny.ckpt")
    (tmp / "empty.ckpt").write_bytes(b"")
    (tmp / "truncated.ckpt").write_bytes((tmp / "tiny.ckpt").read_bytes()[:4096])
    (tmp / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (tmp / "empty_root").mkdir()
    folder = tmp / "to_predict"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((128, 128, 3), 60 * i + 40, np.uint8)).save(folder / f"ok_{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    run = tmp / "runs" / "fitted"
    run.mkdir(parents=True)
    save_run_config(testing.TestConfig(checkpoint=str(tmp / "tiny.safetensors"), model_config=str(TINY_CONFIG),
                               data_set="mvtec", data_path=str(data), exp_name="fitted", output_dir=str(tmp / "runs"),
                               scorer="effnet_lite0", image_size=128, ddim_steps=1, num_workers=0, batch_size=4,
                               device="cpu"), run / "test_config.yaml")
    (run / "thresholds.json").write_text(json.dumps({"image_score": "max", "per_class": {"disc": 0.5}, "all": 0.5}))
    for name, broken, how in [("bad_test", "disc/test/good/000.png", "truncate"),
                              ("bad_mask", "disc/ground_truth/scratch/000_mask.png", "flip"),
                              ("bad_train", "disc/train/good/001.png", "empty")]:
        shutil.copytree(data, tmp / name)
        _break(tmp / name / broken, how)
    (tmp / "vlm").mkdir()
    (tmp / "vlm" / "config.json").write_text("{not json")
    (tmp / "a_file").write_text("")
    (tmp / "broken.yaml").write_text("model: [unclosed\n")
    torch.save({"state_dict": {k[len("first_stage_model."):]: v for k, v in sd.items()
                               if k.startswith("first_stage_model.encoder.")}}, tmp / "encoder_only.ckpt")
    return tmp, data


def _break(path, how):
    """A damaged image file: cut in half, one byte flipped in its pixel data, or emptied."""
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[:len(raw) // 2])
    elif how == "flip":
        raw = bytearray(raw)
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        path.write_bytes(b"")


def eval_args(tmp, data, *extra, exp="case"):
    return ["--resume_path", str(tmp / "tiny.safetensors"), "--model_config", str(TINY_CONFIG), "--data_set", "mvtec",
            "--data_path", str(data), "--exp_name", exp, "--output_dir", str(tmp / "out"), "--scorer",
            "effnet_lite0", "--device", "cpu", "image_size=128", "num_workers=0", "ddim_steps=1", *extra]


def train_args(tmp, data, *extra):
    return ["--resume_path", str(tmp / "tiny.safetensors"), "--model_config", str(TINY_CONFIG), "--data_set", "mvtec",
            "--data_path", str(data), "--exp_name", "case", "--output_dir", str(tmp / "out"), "--accelerator", "cpu",
            "--num_workers", "0", "image_size=128", *extra]


def ae_args(tmp, data, *extra):
    return ["--model_config", str(TINY_CONFIG), "--data_set", "mvtec", "--data_path", str(data), "--exp_name", "case",
            "--output_dir", str(tmp / "out"), "--accelerator", "cpu", "--num_workers", "0", "--resume_path", "",
            *extra, "image_size=64"]


def caption_args(tmp, data, *extra):
    return ["--data_set", "mvtec", "--data_path", str(data), "--backend", "template", "--output_dir",
            str(tmp / "out" / "captions"), *extra]


def build_args(tmp, *extra, sd="tiny.safetensors", config=TINY_CONFIG):
    return ["--sd", str(tmp / sd), "--model_config", str(config), "--out", str(tmp / "out" / "built.safetensors"), *extra]


def run_cli(main, argv, capsys):
    capsys.readouterr()
    status = cli_main(main, argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    return status, err


# (name, CLI, argument builder: (tmp, data) -> argv, what the message must name)
CASES = [
    ("test: batch_size 0", test_cli, lambda t, d: eval_args(t, d, "batch_size=0"), "batch_size"),
    ("test: batch_size not a number", test_cli, lambda t, d: eval_args(t, d, "batch_size=abc"), "batch_size"),
    ("test: misspelt key", test_cli, lambda t, d: eval_args(t, d, "bacth_size=4"), "bacth_size"),
    ("test: start_timestep past the schedule", test_cli, lambda t, d: eval_args(t, d, "start_timestep=5000"),
     "start_timestep"),
    ("test: negative start_timestep", test_cli, lambda t, d: eval_args(t, d, "start_timestep=-1"), "start_timestep"),
    ("test: ddim_steps 0", test_cli, lambda t, d: eval_args(t, d, "ddim_steps=0"), "ddim_steps"),
    ("test: image_size not a multiple", test_cli, lambda t, d: eval_args(t, d, "image_size=100"), "image_size"),
    ("test: image_size too small", test_cli, lambda t, d: eval_args(t, d, "image_size=64"), "image_size"),
    ("test: end_ind before start_ind", test_cli, lambda t, d: eval_args(t, d, "start_ind=2", "end_ind=1"), "end_ind"),
    ("test: unknown scorer", test_cli, lambda t, d: eval_args(t, d, "scorer=dino_huge"), "scorer"),
    ("test: unknown start_mode", test_cli, lambda t, d: eval_args(t, d, "start_mode=late"), "start_mode"),
    ("test: unknown precision", test_cli, lambda t, d: eval_args(t, d, "precision=int4"), "precision"),
    ("test: unknown device", test_cli, lambda t, d: eval_args(t, d, "--device", "tpu9"), "device"),
    ("test: missing data_path", test_cli, lambda t, d: eval_args(t, d, "--data_path", str(t / "dtaa")), "dtaa"),
    ("test: data_path not set", test_cli, lambda t, d: eval_args(t, d, "data_path="), "data_path"),
    ("test: data_path of another layout", test_cli, lambda t, d: eval_args(t, d, "--data_path", str(t / "empty_root")),
     "empty_root"),
    ("test: unknown class", test_cli, lambda t, d: eval_args(t, d, "classes=[wheel]"), "wheel"),
    ("test: missing checkpoint", test_cli, lambda t, d: eval_args(t, d, "--resume_path", str(t / "nope.ckpt")),
     "nope.ckpt"),
    ("test: zero-byte checkpoint", test_cli, lambda t, d: eval_args(t, d, "--resume_path", str(t / "empty.ckpt")),
     "empty.ckpt"),
    ("test: truncated checkpoint", test_cli,
     lambda t, d: eval_args(t, d, "--resume_path", str(t / "truncated.ckpt")), "truncated.ckpt"),
    ("test: garbage safetensors", test_cli,
     lambda t, d: eval_args(t, d, "--resume_path", str(t / "garbage.safetensors")), "garbage.safetensors"),
    ("test: missing model config", test_cli, lambda t, d: eval_args(t, d, "--model_config", str(t / "m.yaml")),
     "m.yaml"),
    ("test: missing scorer weights", test_cli,
     lambda t, d: eval_args(t, d, "--scorer_weights", str(t / "dino.pth")), "dino.pth"),
    ("test: missing run config", test_cli, lambda t, d: eval_args(t, d, "--config", str(t / "run.yaml")), "run.yaml"),
    ("test: eval only of no run", test_cli, lambda t, d: eval_args(t, d, "--run_eval_only"), "case"),
    ("predict: missing folder", test_cli,
     lambda t, d: eval_args(t, d, "--predict", str(t / "nothing_here"), "--threshold", "0.5"), "nothing_here"),
    ("predict: missing threshold file", test_cli,
     lambda t, d: eval_args(t, d, "--predict", str(t / "to_predict"), "--threshold", str(t / "thr.json")), "thr.json"),
    ("predict: corrupt image", test_cli,
     lambda t, d: eval_args(t, d, "--predict", str(t / "to_predict"), "--threshold", "0.5"), "broken.png"),
    ("predict: a setting the threshold was not fitted with", test_cli,
     lambda t, d: ["--predict", str(t / "to_predict"), "--threshold", str(t / "runs" / "fitted"), "image_size=256"],
     "image_size"),
    ("predict: unknown threshold class", test_cli,
     lambda t, d: ["--predict", str(t / "to_predict"), "--threshold", str(t / "runs" / "fitted"), "--threshold_class",
                   "wheel", "--skip_bad_images", "--predict_out", str(t / "out" / "case")], "wheel"),
    ("train: batch_size 0", train_cli, lambda t, d: train_args(t, d, "--batch_size", "0"), "batch_size"),
    ("train: learning rate 0", train_cli, lambda t, d: train_args(t, d, "--learning_rate", "0"), "learning_rate"),
    ("train: image_size not a multiple", train_cli, lambda t, d: train_args(t, d, "image_size=200"), "image_size"),
    ("train: missing data_path", train_cli, lambda t, d: train_args(t, d, "--data_path", str(t / "dtaa")), "dtaa"),
    ("train: zero-byte checkpoint", train_cli,
     lambda t, d: train_args(t, d, "--resume_path", str(t / "empty.ckpt")), "empty.ckpt"),
    ("autoencoder: missing data_path", ae_cli, lambda t, d: ae_args(t, d, "--data_path", str(t / "dtaa")), "dtaa"),
    ("autoencoder: crop larger than the image", ae_cli, lambda t, d: ae_args(t, d, "--crop_size", "128"), "crop_size"),
    ("autoencoder: one of the LPIPS files", ae_cli, lambda t, d: ae_args(t, d, "--lpips_vgg", str(t / "vgg.pth")),
     "lpips_lin"),
    ("autoencoder: zero-byte checkpoint", ae_cli, lambda t, d: ae_args(t, d, "--resume_path", str(t / "empty.ckpt")),
     "empty.ckpt"),
    ("test: truncated test image", test_cli, lambda t, d: eval_args(t, t / "bad_test"),
     "bad_test/disc/test/good/000.png: cannot decode image"),
    ("test: mask with a flipped byte", test_cli, lambda t, d: eval_args(t, t / "bad_mask"),
     "scratch/000.png: its mask"),
    ("train: empty train image", train_cli, lambda t, d: train_args(t, t / "bad_train"),
     "bad_train/disc/train/good/001.png: empty file"),
    ("autoencoder: empty train image", ae_cli, lambda t, d: ae_args(t, t / "bad_train"),
     "bad_train/disc/train/good/001.png: empty file"),
    ("caption: missing data_path", caption_cli, lambda t, d: caption_args(t, t / "dtaa"), "dtaa"),
    ("caption: data_path not set", caption_cli, lambda t, d: caption_args(t, ""), "data_path"),
    ("caption: data_path of another layout", caption_cli, lambda t, d: caption_args(t, t / "empty_root"),
     "empty_root"),
    ("caption: batch_size 0", caption_cli, lambda t, d: caption_args(t, d, "--batch_size", "0"), "batch_size"),
    ("caption: shard_index past num_shards", caption_cli,
     lambda t, d: caption_args(t, d, "--num_shards", "2", "--shard_index", "2"), "shard_index"),
    ("caption: end_ind before start_ind", caption_cli,
     lambda t, d: caption_args(t, d, "--start_ind", "3", "--end_ind", "2"), "end_ind"),
    ("caption: empty train image", caption_cli, lambda t, d: caption_args(t, t / "bad_train"),
     "train/good/001.png: empty file"),
    ("caption: missing model folder", caption_cli,
     lambda t, d: caption_args(t, d, "--backend", "transformers", "--model_path", str(t / "no_vlm")), "no_vlm"),
    ("caption: model config that does not parse", caption_cli,
     lambda t, d: caption_args(t, d, "--backend", "transformers", "--model_path", str(t / "vlm")),
     "vlm/config.json"),
    ("caption: openai backend without an endpoint", caption_cli,
     lambda t, d: caption_args(t, d, "--backend", "openai"), "api_base"),
    ("caption: output_dir is a file", caption_cli, lambda t, d: caption_args(t, d, "--output_dir", str(t / "a_file")),
     "a_file"),
    ("build: missing SD checkpoint", build_cli, lambda t, d: build_args(t, sd="nope.ckpt"), "nope.ckpt"),
    ("build: zero-byte SD checkpoint", build_cli, lambda t, d: build_args(t, sd="empty.ckpt"), "empty.ckpt"),
    ("build: truncated SD checkpoint", build_cli, lambda t, d: build_args(t, sd="truncated.ckpt"), "truncated.ckpt"),
    ("build: garbage SD checkpoint", build_cli, lambda t, d: build_args(t, sd="garbage.safetensors"),
     "garbage.safetensors"),
    ("build: missing autoencoder", build_cli, lambda t, d: build_args(t, "--ae", str(t / "ae.ckpt")), "ae.ckpt"),
    ("build: autoencoder without its decoder", build_cli,
     lambda t, d: build_args(t, "--ae", str(t / "encoder_only.ckpt")), "encoder_only.ckpt"),
    ("build: missing model config", build_cli, lambda t, d: build_args(t, config=t / "m.yaml"), "m.yaml"),
    ("build: model config that does not parse", build_cli, lambda t, d: build_args(t, config=t / "broken.yaml"),
     "broken.yaml"),
    ("build: output is a folder", build_cli,
     lambda t, d: [*build_args(t)[:-2], "--out", str(t / "empty_root")], "empty_root"),
    ("build: output under a file", build_cli,
     lambda t, d: [*build_args(t)[:-2], "--out", str(t / "a_file" / "m.safetensors")], "a_file"),
    ("train: wrong-type override", train_cli, lambda t, d: train_args(t, d, "max_epochs=many"), "max_epochs"),
]


@pytest.mark.parametrize("name, cli, build, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(env, capsys, name, cli, build, needle):
    tmp, data = env
    status, err = run_cli(cli.main, build(tmp, data), capsys)
    assert status == 2
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp / "out").exists(), "a failed start left a run folder"


def test_no_arguments_leaves_nothing(env, capsys, monkeypatch):
    tmp, _ = env
    monkeypatch.chdir(tmp / "empty_root")
    status, err = run_cli(test_cli.main, [], capsys)
    assert status == 2 and len(err) == 1 and "vlmdiff_trained.ckpt" in err[0]
    assert not any((tmp / "empty_root").iterdir())


def test_full_config_with_tiny_checkpoint_fails_fast(env, capsys):
    tmp, data = env
    start = time.perf_counter()
    status, err = run_cli(test_cli.main, eval_args(tmp, data, "--model_config", str(FULL_CONFIG)), capsys)
    assert status == 2 and "does not fit" in err[0] and "tiny.safetensors" in err[0]
    assert time.perf_counter() - start < 5  # no model is built, no weights are loaded
    assert not (tmp / "out").exists()


def test_mistyped_data_path_then_the_fix(env, capsys):
    """A failed start binds nothing: the corrected command runs without --overwrite."""
    tmp, data = env
    status, err = run_cli(test_cli.main, eval_args(tmp, data, "--data_path", str(tmp / "dtaa"), exp="fix"),
                          capsys)
    assert status == 2 and str(tmp / "dtaa") in err[0]
    assert not (tmp / "out" / "fix").exists()
    try:
        assert cli_main(test_cli.main, eval_args(tmp, data, "gallery_per_class=0", exp="fix")) == 0
        rows = (tmp / "out" / "fix" / "per_image.csv").read_text().splitlines()
        assert len(rows) == 3
    finally:
        import shutil

        shutil.rmtree(tmp / "out", ignore_errors=True)


def test_predict_inherits_and_skips_bad_images(env, capsys):
    """No image_size on the command line: the test run's 128 is used; the corrupt image is listed, not scored."""
    tmp, _ = env
    out = tmp / "pred"
    argv = ["--predict", str(tmp / "to_predict"), "--threshold", str(tmp / "runs" / "fitted"), "--predict_out", str(out)]
    status, err = run_cli(test_cli.main, argv, capsys)
    assert status == 2 and "broken.png" in err[0] and not out.exists()
    assert cli_main(test_cli.main, [*argv, "--skip_bad_images"]) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert result["image_size"] == 128 and result["settings"]["ddim_steps"] == 1
    assert [r["file"] for r in result["images"]] == ["ok_0.png", "ok_1.png"]
    assert [s["file"] for s in result["skipped"]] == ["broken.png"]
    assert (out / "skipped.txt").read_text().startswith("broken.png\t")
    assert (out / "predictions.csv").read_text().count("\n") == 3
    assert sorted(p.name for p in (out / "heatmaps").iterdir()) == ["ok_0.png", "ok_1.png"]


def test_corrupt_test_image_stops_before_the_model_loads(env, capsys, monkeypatch):
    tmp, _ = env
    monkeypatch.setattr(test_stage, "load_model", lambda *a: pytest.fail("the model was loaded"))
    status, err = run_cli(test_cli.main, eval_args(tmp, tmp / "bad_test"), capsys)
    assert status == 2 and "000.png: cannot decode image" in err[0] and "--skip_bad_images" in err[0]
    assert not (tmp / "out").exists()


def test_test_run_skips_bad_images_and_lists_them(env, capsys):
    """--skip_bad_images: the unreadable test image is listed in skipped.txt, the tables cover the others."""
    tmp, _ = env
    run = tmp / "out" / "skip"
    try:
        assert cli_main(test_cli.main, eval_args(tmp, tmp / "bad_test", "gallery_per_class=0", "--skip_bad_images",
                                                 exp="skip")) == 0
        assert (run / "skipped.txt").read_text().startswith("disc/test/good/000.png\tcannot decode image")
        rows = (run / "per_image.csv").read_text().splitlines()
        assert len(rows) == 2 and rows[1].startswith("disc/test/scratch/000.png,")
        assert json.loads((run / "images.json").read_text()) == ["disc/test/scratch/000.png"]
        # the same run with the image repaired scores it; skipped.txt is emptied
        shutil.copy(env[1] / "disc/test/good/000.png", tmp / "bad_test/disc/test/good/000.png")
        assert cli_main(test_cli.main, eval_args(tmp, tmp / "bad_test", "gallery_per_class=0", exp="skip")) == 0
        assert (run / "skipped.txt").read_text() == ""
        assert len((run / "per_image.csv").read_text().splitlines()) == 3
    finally:
        _break(tmp / "bad_test/disc/test/good/000.png", "truncate")
        shutil.rmtree(tmp / "out", ignore_errors=True)


def test_build_model_checks_the_sd_layout_from_the_header(env, capsys):
    """The full-size config with the tiny checkpoint: refused in seconds naming the file and a key, no weights
    loaded, no model built."""
    tmp, _ = env
    start = time.perf_counter()
    status, err = run_cli(build_cli.main, build_args(tmp, config=FULL_CONFIG), capsys)
    assert status == 2 and "tiny.safetensors" in err[0] and "shape" in err[0]
    assert time.perf_counter() - start < 10
    assert not (tmp / "out").exists()


def test_skip_bad_images_with_no_readable_image_writes_nothing(env, capsys, tmp_path):
    tmp, data = env
    broken = tmp_path / "all_bad"
    shutil.copytree(data, broken)
    for p in (broken / "disc" / "test").rglob("*.png"):
        _break(p, "empty")
    status, err = run_cli(test_cli.main, eval_args(tmp, broken, "--skip_bad_images"), capsys)
    assert status == 2 and "none of the 2 images of the test split" in err[0]
    assert not (tmp / "out").exists()
