"""One-line user errors of the command-line tools (vlmdiff/errors.py)."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from vlmdiff.errors import cli_main, user_message


class _Broken(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise ValueError("data/x/001.png: cannot decode image (truncated)")


def _raises(err):
    def main(argv):
        raise err
    return main


@pytest.mark.parametrize("err, expected", [
    (ValueError("batch_size: must be >= 1, got 0"), "batch_size: must be >= 1, got 0"),
    (FileNotFoundError("data/mvtec: dataset root not found"), "data/mvtec: dataset root not found"),
    (KeyError("runs/x/thresholds.json: no threshold for class 'cat'"), "runs/x/thresholds.json: no threshold for class 'cat'"),
])
def test_user_errors_are_one_line_with_status_2(err, expected, capsys):
    assert cli_main(_raises(err), []) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_dataloader_worker_errors_are_unwrapped(capsys):
    def main(argv):
        for _ in DataLoader(_Broken(), num_workers=1):
            pass
    assert cli_main(main, []) == 2
    assert capsys.readouterr().err == "error: data/x/001.png: cannot decode image (truncated)\n"


def test_worker_wrapping_text_is_removed():
    wrapped = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1, in f\nValueError: a.png: cannot decode image")
    assert user_message(wrapped) == "a.png: cannot decode image"


def test_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(ValueError, match="bad"):
        cli_main(_raises(ValueError("bad")), ["--debug"])
    monkeypatch.setenv("VLMDIFF_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        cli_main(_raises(ValueError("bad")), [])


def test_debug_flag_is_not_passed_on_and_other_errors_propagate():
    seen = []
    assert cli_main(lambda argv: seen.append(argv) or 0, ["--debug", "a=1"]) == 0
    assert seen == [["a=1"]]
    with pytest.raises(RuntimeError):
        cli_main(_raises(RuntimeError("a bug")), [])
