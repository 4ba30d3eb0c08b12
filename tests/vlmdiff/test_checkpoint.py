"""The checkpoint loader: formats, unwrapping, and refusals."""

import pytest
import torch
from safetensors.torch import save_file

from vlmdiff.checkpoint import load_state_dict, strip_prefix


def test_formats_and_unwrapping(tmp_path):
    sd = {"a.weight": torch.ones(2, 2), "b": torch.arange(3)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "m.ckpt")
    torch.save({"model": sd}, tmp_path / "m.pth")
    torch.save(sd, tmp_path / "m.pt")
    for name in ("m.safetensors", "m.ckpt", "m.pth", "m.pt"):
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(sd) and torch.equal(loaded["b"], sd["b"]), name


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        load_state_dict(tmp_path / "nothing.ckpt")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown checkpoint type"):
        load_state_dict(tmp_path / "w.npz")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors"):
        load_state_dict(tmp_path / "broken.safetensors")
    (tmp_path / "trunc.ckpt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="trunc.ckpt"):
        load_state_dict(tmp_path / "trunc.ckpt")


class Hook:
    """Stands for any object a checkpoint might pickle (code that would run on load)."""


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(1)}, "hook": Hook()}, tmp_path / "odd.ckpt")
    with pytest.raises(ValueError, match="odd.ckpt.*weights_only"):
        load_state_dict(tmp_path / "odd.ckpt")
    assert "w" in load_state_dict(tmp_path / "odd.ckpt", weights_only=False)


def test_strip_prefix_only_strips_leading_prefixes():
    sd = {"first_stage_model.encoder.w": 1, "x.first_stage_model.y": 2}
    assert strip_prefix(sd, "first_stage_model.") == {"encoder.w": 1}


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_save_state_dict_round_trips(tmp_path, suffix):
    from vlmdiff.checkpoint import save_state_dict

    state = {"a.weight": torch.arange(6.0).reshape(2, 3).T, "b": torch.ones(2, dtype=torch.int64)}  # a.weight strided
    path = tmp_path / "sub" / f"m{suffix}"
    path.parent.mkdir()
    save_state_dict(state, path)
    back = load_state_dict(path)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
