"""The precision/XLA probe's decisions, driven by fake steppers with scripted timings (no wall clock)."""
from __future__ import annotations

import json

import pytest

from tfbonemet import execution

BF16 = ("mixed_bfloat16", False)
F32_XLA = ("float32", True)


def quiet(*_):
    pass


def scripted(times: dict, calls: list | None = None):
    """make_stepper whose stepper for a candidate returns its scripted seconds/step, round after round."""
    def make(candidate):
        rounds = iter(times[candidate])

        def window():
            if calls is not None:
                calls.append(candidate)
            return next(rounds)
        return window
    return make


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with no cached probe timings."""
    monkeypatch.setenv("TFBONEMET_CACHE", str(tmp_path))


@pytest.fixture
def cpu(monkeypatch):
    """A CPU with native bfloat16, so `auto` has four candidates."""
    monkeypatch.setattr(execution, "has_gpu", lambda: False)
    monkeypatch.setattr(execution, "cpu_has_bf16", lambda: True)


def choose(times, key=None, batch=16, log=quiet, calls=None, total_steps=None):
    return execution.choose("auto", "auto", None, key or {"model": "m", "size": [256, 64]}, batch,
                            log=log, make_stepper=scripted(times, calls), total_steps=total_steps)


def rounds(*first, rest=None):
    """Scripted seconds/step of PROBE_ROUNDS rounds: `first`, then the last of them (or `rest`) repeated."""
    return list(first) + [first[-1] if rest is None else rest] * (execution.PROBE_ROUNDS - len(first))


def times(f32=(0.10,), f32_xla=(0.12,), bf16=(0.10,), bf16_xla=(0.13,)):
    return {("float32", False): rounds(*f32), F32_XLA: rounds(*f32_xla), BF16: rounds(*bf16),
            ("mixed_bfloat16", True): rounds(*bf16_xla)}


def test_clear_winner_is_chosen_and_every_candidate_is_reported(cpu):
    lines = []
    assert choose(times(bf16=(0.07, 0.075, 0.08)), log=lines.append) == BF16
    line = lines[-1]
    assert "chose mixed_bfloat16+noxla" in line and "1.43x" in line
    for name in ("float32+noxla", "float32+xla", "mixed_bfloat16+noxla", "mixed_bfloat16+xla"):
        assert f"{name} " in line
    assert "70.0 ms/step" in line and "100.0 ms/step" in line


def test_small_gain_keeps_float32(cpu):
    """5 % is within what the shared machine's noise moves a timing: not worth leaving float32 for."""
    assert choose(times(bf16=(0.095,))) == ("float32", False)


def test_one_lucky_round_does_not_win(cpu):
    """Best round 25 % faster, but the median round slower: noise, not a gain."""
    assert choose(times(f32_xla=(0.08, 0.11, 0.12))) == ("float32", False)


def test_load_spike_in_one_baseline_round_does_not_lose_float32(cpu):
    """A spike slows one float32 round; best and median still see float32 as fast as bfloat16."""
    assert choose(times(f32=(0.30, 0.10), bf16=(0.10,))) == ("float32", False)


def test_fastest_of_several_clear_winners(cpu):
    assert choose(times(f32_xla=(0.08,), bf16=(0.06,), bf16_xla=(0.07,))) == BF16


def test_xla_alone_is_probed_without_bf16(monkeypatch):
    monkeypatch.setattr(execution, "has_gpu", lambda: False)
    monkeypatch.setattr(execution, "cpu_has_bf16", lambda: False)
    calls, lines = [], []
    assert choose(times(f32_xla=(0.05,)), calls=calls, log=lines.append) == F32_XLA
    assert set(calls) == {("float32", False), F32_XLA}
    assert "bfloat16 not probed" in lines[-1]


def test_rounds_alternate_candidates_with_rotated_order(cpu):
    calls = []
    choose(times(), calls=calls)
    order = [execution.label(c) for c in execution.candidates("auto", "auto")]
    taken = [[execution.label(c) for c in calls[i:i + 4]] for i in range(0, len(calls), 4)]
    assert len(taken) == execution.PROBE_ROUNDS >= 3 and all(sorted(r) == sorted(order) for r in taken)
    assert taken[0] == order and taken[1] == order[1:] + order[:1] and taken[2][0] == order[2]


def test_timings_are_cached_and_reused(cpu, tmp_path):
    lines = []
    first = choose(times(bf16=(0.05,)))
    again = choose({}, log=lines.append)  # a stepper would fail: nothing is timed again
    assert again == first == BF16 and any("cached" in line for line in lines)
    files = list((tmp_path / "execution-probe").glob("*.json"))
    assert len(files) == 1 and (files[0].stat().st_mode & 0o777) == 0o644
    assert json.loads(files[0].read_text())["mixed_bfloat16+noxla"] == rounds(0.05)


@pytest.mark.parametrize("change", [
    {"key": {"model": "m", "size": [512, 128]}},  # input size
    {"key": {"model": "m", "size": [256, 64], "options": {"filters": [8, 16]}}},  # model options
    {"key": {"model": "other", "size": [256, 64]}},  # model
    {"batch": 32},
])
def test_cache_key_covers_input_size_batch_and_model(cpu, change):
    choose(times(bf16=(0.05,)))
    calls = []
    assert choose(times(), calls=calls, **change) == ("float32", False)
    assert len(calls) == 4 * execution.PROBE_ROUNDS  # timed afresh


def test_cache_key_covers_cpu_and_versions(monkeypatch):
    key, options = {"model": "m", "size": [256, 64]}, [("float32", False), BF16]
    base = execution.probe_path(key, 16, options)
    monkeypatch.setattr(execution, "cpu_description", lambda: {"cpu": "other", "bf16": True, "cores": 2})
    assert execution.probe_path(key, 16, options) != base
    monkeypatch.setattr(execution, "PROBE_VERSION", execution.PROBE_VERSION + 1)
    assert execution.probe_path(key, 16, options) != base


def test_short_run_keeps_float32_untimed_and_uncached(cpu, tmp_path):
    """Two steps of 0.1 s cannot repay timing four settings: one sizing window of float32, no cache."""
    calls, lines = [], []
    scripted_times = times(bf16=(0.05,))
    scripted_times[("float32", False)].insert(0, 0.10)  # the sizing window
    assert choose(scripted_times, calls=calls, log=lines.append, total_steps=2) == ("float32", False)
    assert calls == [("float32", False)] and "too short" in lines[-1]
    assert not (tmp_path / "execution-probe").exists()


def test_long_run_is_probed_after_one_sizing_window(cpu):
    calls = []
    scripted_times = times(bf16=(0.05,))
    scripted_times[("float32", False)].insert(0, 0.10)
    cost = execution.probe_seconds(4, 0.10)
    steps = int(cost / execution.MAX_PROBE_SHARE / 0.10) + 1
    assert choose(scripted_times, calls=calls, total_steps=steps) == BF16
    assert len(calls) == 1 + 4 * execution.PROBE_ROUNDS


def test_fixed_settings_are_not_probed(cpu):
    assert execution.choose("mixed_bfloat16", "off", None, {}, 16, log=quiet, make_stepper=None) == BF16
    assert execution.choose("float32", "auto", None, {}, 16, log=quiet, make_stepper=None) == ("float32", False)


def test_gpu_gets_mixed_float16_with_xla(monkeypatch):
    monkeypatch.setattr(execution, "has_gpu", lambda: True)
    assert execution.choose("auto", "auto", None, {}, 16, log=quiet) == ("mixed_float16", True)
