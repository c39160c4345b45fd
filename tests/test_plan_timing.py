"""Planning times that do not depend on how busy the machine is (segls.plan.timing).

A stubbed clock stands in for the machine: each training step costs a fixed number of
single-thread CPU seconds, and a busy machine stretches the clocks as two busy processes did
on the project's 2-core VM. The plan must come out the same.
"""

from __future__ import annotations

import pytest
import torch
from helpers import square_dataset

from segls.plan import planner, timing
from segls.plan.planner import plan_dataset

# Measured on the 2-core VM (U-Net/R18, batch 8, 128^2), idle and beside two busy processes:
# one thread: CPU 1.414 s, wall 1.425 s idle; CPU 1.537 s, wall 3.142 s busy.
# two threads: CPU 1.812 s, wall 0.924 s idle; CPU 4.990 s, wall 7.097 s busy.
BUSY = {"cpu_1": 1.537 / 1.414, "wall_1": 3.142 / 1.414,
        "cpu_n": 4.990 / 1.812, "wall_n": 7.097 / 0.924}  # fmt: skip
IDLE = {"cpu_1": 1.0, "wall_1": 1.0, "cpu_n": 1.0, "wall_n": 1.0}


class FakeMachine:
    """Clocks advanced by fake training steps of 1e-6 single-thread CPU seconds a pixel.

    Idle, one thread's CPU time equals its wall time, and N threads take 1/speedup(N) of it
    in wall time while all N spin (CPU time N x wall). Busy stretches each as measured.
    """

    def __init__(self, load: dict) -> None:
        self.cpu = self.wall = 0.0
        self.load = load
        self.threads_seen: set[int] = set()

    def step(self, model, objective, images, labels, optimizer, scaler) -> None:
        threads = torch.get_num_threads()
        self.threads_seen.add(threads)
        work = 1e-6 * images.numel()
        if threads == 1:
            self.cpu += work * self.load["cpu_1"]
            self.wall += work * self.load["wall_1"]
        else:
            wall = work / timing.speedup(threads)
            self.cpu += threads * wall * self.load["cpu_n"]
            self.wall += wall * self.load["wall_n"]


@pytest.fixture
def machine(monkeypatch):
    """Install a FakeMachine's clocks and step; `machine(load)` sets its load."""

    def install(load: dict) -> FakeMachine:
        fake = FakeMachine(load)
        monkeypatch.setattr(timing, "train_one_iter", fake.step)
        monkeypatch.setattr(timing, "cpu_clock", lambda: fake.cpu)
        monkeypatch.setattr(timing, "wall_clock", lambda: fake.wall)
        return fake

    return install


def test_speedup_is_amdahls_law_worked_by_hand():
    assert timing.speedup(1) == pytest.approx(1.0)
    # 1 / (0.18 + 0.82 / 2) = 1 / 0.59
    assert timing.speedup(2) == pytest.approx(1 / 0.59)
    # 1 / (0.18 + 0.82 / 16) = 1 / 0.23125
    assert timing.speedup(16) == pytest.approx(1 / 0.23125)


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with timing.single_thread(torch.device("cpu")) as threads:
        assert threads == before and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_same_plan_on_an_idle_and_a_busy_machine(tmp_path, machine):
    square_dataset(tmp_path, 40, 256)
    idle = machine(IDLE)
    plan_idle = plan_dataset(tmp_path, budget_minutes=2, device="cpu", log=lambda _: None)
    assert 1 in idle.threads_seen  # steps are timed on one thread ...
    # ... and an idle machine's wall-clock check on all threads is reported beside them
    threads = torch.get_num_threads()
    if threads > 1:
        assert all(probe.timing.wall_step is not None for probe in plan_idle.probes)
    busy = machine(BUSY)
    plan_busy = plan_dataset(tmp_path, budget_minutes=2, device="cpu", log=lambda _: None)
    assert all(probe.timing.wall_step is None for probe in plan_busy.probes)
    idle_cfg, busy_cfg = plan_idle.config, plan_busy.config
    assert busy_cfg.data.crop_size == idle_cfg.data.crop_size
    assert busy_cfg.model == idle_cfg.model
    ratio = busy_cfg.schedule.max_iters / idle_cfg.schedule.max_iters
    assert 0.9 <= ratio <= 1.0, (busy_cfg.schedule.max_iters, idle_cfg.schedule.max_iters)
    assert busy.threads_seen == {1}
    # The step time is the single-thread CPU time over Amdahl's speedup, worked by hand:
    # batch 8 x crop x 1 channel pixels x 1e-6 s, / speedup(threads)
    probe = plan_idle.probes[-1]
    height, width = probe.crop
    expected = 1e-6 * 8 * height * width / timing.speedup(threads)
    assert probe.timing.step == pytest.approx(expected, rel=1e-6, abs=0.02)
    assert "1-thread CPU time" in probe.timing.clock


def test_planning_reads_no_wall_clock_on_a_cpu(tmp_path, machine, monkeypatch):
    square_dataset(tmp_path, 12, 128)
    machine(IDLE)
    monkeypatch.setattr(timing, "idle_wall_step", lambda cfg, parts, threads: None)

    def no_wall_clock() -> float:
        raise AssertionError("a CPU plan read the wall clock")

    monkeypatch.setattr(timing, "wall_clock", no_wall_clock)
    plan = plan_dataset(tmp_path, budget_minutes=1, device="cpu", log=lambda _: None)
    assert plan.config.schedule.max_iters > 0
    assert planner.recipe.MIN_ITERS > 0
