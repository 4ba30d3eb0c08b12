"""Test-run results keyed by image: grown and shrunk datasets, per_image.csv, content-checked resume."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch.nn.functional as F

from tests.stand_ins import NoisyCopy, extractor
from utils.io import write_json
from vlmdiff import testing
from vlmdiff.data import build_dataset
from vlmdiff.data.synthetic import generate


@pytest.fixture
def data(tmp_path):
    return generate(tmp_path / "data", classes=("disc",), image_size=64, n_train=1, n_test_good=2, n_test_defect=2)


def cfg_for(tmp_path, data, **kw):
    settings = dict(checkpoint=str(tmp_path / "model.ckpt"), model_config=str(tmp_path / "model.yaml"),
                    data_set="mvtec", data_path=str(data), exp_name="run", output_dir=str(tmp_path / "runs"),
                    image_size=64, scorer="effnet_lite0", num_workers=0, batch_size=3, device="cpu")
    return testing.TestConfig(**{**settings, **kw})


def run_test(cfg, monkeypatch=None):
    """prepare + score + evaluate like test.py; returns (results, per_image rows, number of images scored)."""
    scored = []
    real = testing.score_batch
    if monkeypatch is not None:
        monkeypatch.setattr(testing, "score_batch", lambda m, e, batch, c: scored.extend(batch["key"]) or
                            real(m, e, batch, c))
    testing.prepare_run_dir(cfg)
    ds = build_dataset("mvtec", cfg.data_path, "test", image_size=cfg.image_size)
    testing.run_batches(NoisyCopy(), extractor, ds, cfg)
    results = testing.evaluate_run(cfg)
    with open(cfg.run_dir / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return results, rows, scored


@pytest.fixture
def files(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"weights-v1" * 100)
    (tmp_path / "model.yaml").write_text("model: {}\n")
    return tmp_path


def test_per_image_csv_lists_every_image_once(files, data, monkeypatch):
    cfg = cfg_for(files, data)
    _, rows, scored = run_test(cfg, monkeypatch)
    keys = build_dataset("mvtec", data, "test", image_size=64).keys
    assert [r["path"] for r in rows] == keys and sorted(scored) == sorted(keys)
    assert list(rows[0]) == list(testing.PER_IMAGE_COLUMNS)
    assert {r["label"] for r in rows} == {"0", "1"} and all(r["class"] == "disc" for r in rows)
    for r in rows:
        assert (cfg.run_dir / r["map_file"]).is_file() and r["heatmap"] == ""
    stored = testing.load_results(cfg.run_dir)
    assert list(stored["keys"]) == keys and stored["maps"].shape == (4, 64, 64)
    assert len({r["score"] for r in rows}) == 4


def test_per_image_csv_records_how_far_each_reconstruction_is_from_its_input(files, data, monkeypatch):
    from vlmdiff.demo import normal_distances
    from vlmdiff.inference import image_noise

    cfg = cfg_for(files, data)
    _, rows, _ = run_test(cfg, monkeypatch)
    ds = build_dataset("mvtec", data, "test", image_size=64)
    for i, r in enumerate(rows):
        posterior, noise = image_noise([r["path"]], cfg.seed, (4, 8, 8))
        bump = F.interpolate(noise[:, :3] + posterior[:, 1:], size=(64, 64), mode="nearest")
        assert float(r["l1_sample"]) == pytest.approx(float((0.5 * bump).abs().mean()), rel=1e-5)
        assert r["l1_autoencoder"] == ""  # no autoencoder round trip was decoded (no visuals)
        assert ds.keys[i] == r["path"]
    normal = [float(r["l1_sample"]) for r in rows if r["label"] == "0"]
    got = normal_distances(cfg.run_dir)
    assert got["samples"] == pytest.approx(sum(normal) / len(normal)) and np.isnan(got["autoencoder"])
    (cfg.run_dir / "per_image.csv").write_text("\n".join(
        line for line in (cfg.run_dir / "per_image.csv").read_text().splitlines() if ",0," not in line) + "\n")
    assert all(np.isnan(v) for v in normal_distances(cfg.run_dir).values())  # no normal image left


def test_grown_dataset_scores_only_new_images_and_shrunk_reports_only_present(files, data, monkeypatch):
    cfg = cfg_for(files, data)
    _, before, _ = run_test(cfg, monkeypatch)
    good = data / "disc" / "test" / "good"
    shutil.copy(good / "000.png", good / "007.png")
    _, grown, scored = run_test(cfg, monkeypatch)
    assert scored == ["disc/test/good/007.png"]
    assert sorted(r["path"] for r in grown) == sorted([r["path"] for r in before] + ["disc/test/good/007.png"])
    old = {r["path"]: r["score"] for r in before}
    assert all(r["score"] == old[r["path"]] for r in grown if r["path"] in old)
    new = next(r for r in grown if r["path"].endswith("007.png"))
    assert new["score"] != old["disc/test/good/000.png"]  # same pixels, its own noise

    removed = next(p for p in sorted((data / "disc" / "test").rglob("*.png")) if "good" not in p.parts)
    os.remove(removed)
    results, shrunk, scored = run_test(cfg, monkeypatch)
    assert scored == []
    gone = removed.relative_to(data).as_posix()
    assert sorted(r["path"] for r in shrunk) == sorted(r["path"] for r in grown if r["path"] != gone)
    assert all(r["score"] == old.get(r["path"], new["score"]) for r in shrunk)
    assert len(testing.load_results(cfg.run_dir)["keys"]) == 4  # the removed image's result is not reported

    fresh = cfg_for(files, data, exp_name="fresh", batch_size=2)
    fresh_results, fresh_rows, _ = run_test(fresh)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "map_file"} for r in rows]  # noqa: E731
    assert drop(fresh_rows) == drop(shrunk) and fresh_results == results  # as if scored from scratch


def test_eval_only_refuses_images_without_results(files, data):
    cfg = cfg_for(files, data)
    run_test(cfg)
    shutil.copy(data / "disc" / "test" / "good" / "000.png", data / "disc" / "test" / "good" / "009.png")
    ds = build_dataset("mvtec", data, "test", image_size=64)
    write_json(cfg.run_dir / testing.IMAGES_FILE, ds.keys)  # the selection of a run that was cut short
    with pytest.raises(ValueError, match=r"1 of 5 images have no stored result .*009\.png"):
        testing.evaluate_run(cfg)


def test_changed_checkpoint_is_refused_naming_it(files, data):
    cfg = cfg_for(files, data)
    run_test(cfg)
    os.utime(files / "model.ckpt", ns=(1, 1))  # touched: same content, the run resumes
    testing.prepare_run_dir(cfg)
    (files / "model.ckpt").write_bytes(b"weights-v2" * 100)  # retrained: same size, other content
    with pytest.raises(ValueError, match=r"checkpoint .*model\.ckpt: content changed \(size 1000 -> 1000, "
                                         r"sha256 [0-9a-f]{12}\.\.\. -> [0-9a-f]{12}\.\.\.\).*--overwrite"):
        testing.prepare_run_dir(cfg)
    (files / "model.yaml").write_text("model: {changed: 1}\n")
    with pytest.raises(ValueError, match="model_config .*model.yaml: content changed"):
        testing.prepare_run_dir(cfg)
    assert list((cfg.run_dir / "scores").glob("*.npz"))
    cfg.overwrite = True
    testing.prepare_run_dir(cfg)
    assert not list((cfg.run_dir / "scores").glob("*.npz"))
    cfg.overwrite = False
    testing.prepare_run_dir(cfg)  # the new content is now the run's


def test_moved_checkpoint_with_same_content_resumes(files, data):
    cfg = cfg_for(files, data)
    run_test(cfg)
    shutil.move(files / "model.ckpt", files / "moved.ckpt")
    cfg.checkpoint = str(files / "moved.ckpt")
    testing.prepare_run_dir(cfg)
    assert list((cfg.run_dir / "scores").glob("*.npz"))


def test_a_run_stored_under_the_old_checkpoint_key_is_recognised(files, data):
    """run.json of earlier versions names the checkpoint resume_path: the same run resumes, another is refused."""
    cfg = cfg_for(files, data)
    run_test(cfg)
    marker = cfg.run_dir / "run.json"
    stored = json.loads(marker.read_text())
    stored = {("resume_path" if k == "checkpoint" else k): v for k, v in stored.items()}
    marker.write_text(json.dumps(stored))
    (files / "other.ckpt").write_bytes(b"weights-v2" * 100)
    with pytest.raises(ValueError, match=r"checkpoint .*other\.ckpt: content changed"):
        testing.prepare_run_dir(testing.TestConfig(**{**vars(cfg), "checkpoint": str(files / "other.ckpt")}))
    testing.prepare_run_dir(cfg)
    assert list((cfg.run_dir / "scores").glob("*.npz"))  # kept: the same settings
    assert "checkpoint" in json.loads(marker.read_text()) and "resume_path" not in json.loads(marker.read_text())


def test_file_digest_is_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    d = testing.file_digest(f)
    assert d["size"] == 3 and d["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    fake = {**d, "sha256": "0" * 64}
    testing._DIGESTS.clear()
    assert testing.file_digest(f, fake)["sha256"] == "0" * 64  # unchanged size and mtime: not hashed again
    f.write_bytes(b"xyz")
    os.utime(f, ns=(d["mtime_ns"] + 10**9, d["mtime_ns"] + 10**9))
    assert testing.file_digest(f, fake)["sha256"] != "0" * 64
    assert testing.file_digest(tmp_path / "missing.bin") is None and testing.file_digest(None) is None


def test_replaced_image_is_scored_again_alone(files, data, monkeypatch):
    """Same name, other content: detected by size and modification time; only that image is scored again."""
    cfg = cfg_for(files, data)
    _, before, _ = run_test(cfg, monkeypatch)
    good = data / "disc" / "test" / "good"
    replaced = good / "001.png"
    stat = replaced.stat()
    shutil.copy(data / "disc" / "test" / "scratch" / "000.png", replaced)  # an anomalous image's pixels
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match=r"good/001\.png: changed since it was scored .*without --run_eval_only"):
        testing.evaluate_run(cfg)  # --run_eval_only: the stored result is stale
    _, after, scored = run_test(cfg, monkeypatch)
    assert scored == ["disc/test/good/001.png"]
    old, new = ({r["path"]: r["score"] for r in rows} for rows in (before, after))
    assert list(new) == list(old) and new["disc/test/good/001.png"] != old["disc/test/good/001.png"]
    assert all(new[k] == old[k] for k in old if k != "disc/test/good/001.png")
    fresh = cfg_for(files, data, exp_name="fresh")
    _, rows, _ = run_test(fresh)
    assert {r["path"]: r["score"] for r in rows} == new  # as if scored from scratch
    _, again, scored = run_test(cfg, monkeypatch)
    assert scored == [] and again == after


def test_replaced_mask_is_scored_again(files, data, monkeypatch):
    cfg = cfg_for(files, data)
    run_test(cfg, monkeypatch)
    mask = next((data / "disc" / "ground_truth").rglob("*.png"))
    os.utime(mask, ns=(1, 10**18))
    _, _, scored = run_test(cfg, monkeypatch)
    assert len(scored) == 1 and mask.name.replace("_mask", "") in scored[0]


def test_eval_only_refuses_a_removed_image(files, data):
    cfg = cfg_for(files, data)
    run_test(cfg)
    gone = data / "disc" / "test" / "good" / "000.png"
    gone.unlink()
    with pytest.raises(ValueError, match=r"good/000\.png: removed since it was scored"):
        testing.evaluate_run(cfg)
