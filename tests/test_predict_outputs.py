"""Predictions are all-or-nothing: a scorer that fails midway leaves the output folder as it was."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.stand_ins import NoisyCopy, extractor
from vlmdiff import predict


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "images"
    out.mkdir()
    for i in range(5):
        Image.fromarray(np.full((64, 64, 3), 40 * i + 20, np.uint8)).save(out / f"{i}.png")
    return out


def run(folder, out, **kw):
    return predict.predict_folder(NoisyCopy(), extractor, folder, out, threshold=0.5, image_size=64, method="max",
                                  batch_size=2, **kw)


def crash_after_first_batch(monkeypatch):
    real, calls = predict.score_images, []

    def scorer(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("scorer failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "score_images", scorer)
    return calls


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_crash_midway_leaves_nothing(folder, tmp_path, monkeypatch):
    calls = crash_after_first_batch(monkeypatch)
    out = tmp_path / "new" / "deeper" / "pred"
    with pytest.raises(RuntimeError, match="scorer failed"):
        run(folder, out)
    assert len(calls) == 2  # the first batch was scored (and its maps written somewhere) before the crash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no output, no staging, no new parents


def test_crash_midway_keeps_the_earlier_prediction(folder, tmp_path, monkeypatch):
    out = tmp_path / "pred"
    rows = run(folder, out)
    assert len(rows) == 5 and len(list((out / "heatmaps").iterdir())) == 5
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    (folder / "5.png").write_bytes((folder / "0.png").read_bytes())
    crash_after_first_batch(monkeypatch)
    with pytest.raises(RuntimeError):
        run(folder, out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "pred"]


def test_rerun_replaces_every_output(folder, tmp_path):
    out = tmp_path / "pred"
    run(folder, out)
    (folder / "4.png").unlink()
    (out / "notes.txt").write_text("mine")
    rows = run(folder, out)
    assert [r["file"] for r in rows] == ["0.png", "1.png", "2.png", "3.png"]
    for sub in ("maps", "heatmaps"):  # no map of the removed image stays behind
        assert sorted(p.name for p in (out / sub).iterdir()) == ["0.png", "1.png", "2.png", "3.png"]
    assert (out / "predictions.csv").read_text().count("\n") == 5
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "pred"]


def test_predictions_score_as_a_test_run_scores(folder, tmp_path):
    """One scoring path: a prediction with a run config's scoring settings gives each image the map and score
    a test run's batch gets (same key, same settings), and the settings reach the scorer."""
    import inspect

    from vlmdiff import testing
    from vlmdiff.inference import SCORING_SETTINGS, score_images, scoring_settings
    from vlmdiff.scoring import image_score_method, image_scores

    assert set(SCORING_SETTINGS) <= set(inspect.signature(score_images).parameters)
    cfg = testing.TestConfig(seed=3, sigma=2.0, ddim_steps=2, start_timestep=500, batch_invariant=False)
    rows = predict.predict_folder(NoisyCopy(), extractor, folder, tmp_path / "pred", threshold=0.5, image_size=64,
                                  method="pooled", batch_size=2, scoring=scoring_settings(cfg))
    paths = sorted(folder.glob("*.png"))
    x = torch.stack([predict.image_to_tensor(predict.load_rgb(p), 64) for p in paths])
    batch = {"jpg": x, "hint": x, "key": [p.name for p in paths], "txt": [""] * len(paths)}
    res = testing.score_batch(NoisyCopy(), extractor, batch, cfg)
    assert image_score_method("pooled", res["maps"].shape) == "pooled"
    assert [r["score"] for r in rows] == [float(image_scores(m[None], "pooled")[0]) for m in res["maps"]]
    other = predict.predict_folder(NoisyCopy(), extractor, folder, tmp_path / "pred_seed", threshold=0.5,
                                   image_size=64, method="pooled", scoring=scoring_settings(testing.TestConfig()))
    assert [r["score"] for r in other] != [r["score"] for r in rows]
