"""How the demo reads the machine's load: a blip does not halve its threads, a busy core does."""

import os

import torch

from utils import cpu
from vlmdiff.pipelines import demo


def test_a_blip_in_one_reading_is_ignored_a_steady_load_is_not(monkeypatch):
    readings = iter([1.9, 0.1, 0.0, 1.0, 1.1, 0.9])
    monkeypatch.setattr(cpu, "busy_cores", lambda interval=0.5: next(readings))
    assert cpu.steady_busy_cores() == 0.1
    assert cpu.steady_busy_cores() == 1.0


def test_demo_threads_follow_the_free_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset")  # recorded, so the test's own setting is undone afterwards
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(demo, "usable_cores", lambda: 2)
    try:
        monkeypatch.setattr(demo, "steady_busy_cores", lambda: 0.1)
        assert demo.configure_cpu(0) == 2 and "OMP_WAIT_POLICY" not in os.environ
        monkeypatch.setattr(demo, "steady_busy_cores", lambda: 1.0)
        assert demo.configure_cpu(0) == 1 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert demo.configure_cpu(3) == 3  # an explicit --threads wins
    finally:
        torch.set_num_threads(before)
