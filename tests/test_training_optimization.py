"""Tests for training/optimization.py: schedules in epochs, warm-up, a --lr taken over on resume."""
import math

import pytest

from settings.config import TrainConfig, with_defaults
from training.optimization import EpochSchedule, build_optimizer


def lr_at(schedule, step):
    return float(schedule(step))


def test_exponential_step_mindspore_recipe():
    s = EpochSchedule(0.1, "exponential_step", steps_per_epoch=10, epochs=300,
                      decay_epochs=(70, 140, 210, 280), gamma=0.3)
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 699) == pytest.approx(0.1)
    assert lr_at(s, 700) == pytest.approx(0.03)
    assert lr_at(s, 1400) == pytest.approx(0.009)
    assert lr_at(s, 2999) == pytest.approx(0.1 * 0.3 ** 4)


def test_polynomial_cosine_constant_and_warmup():
    poly = EpochSchedule(0.01, "polynomial", steps_per_epoch=5, epochs=10)
    assert lr_at(poly, 25) == pytest.approx(0.005)
    assert lr_at(poly, 50) == pytest.approx(0.0)
    cosine = EpochSchedule(1.0, "cosine", steps_per_epoch=10, epochs=4)
    assert lr_at(cosine, 20) == pytest.approx(0.5)
    assert lr_at(cosine, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    warm = EpochSchedule(0.4, "constant", steps_per_epoch=10, epochs=5, warmup_epochs=2)
    assert [lr_at(warm, s) for s in (0, 9, 19, 30)] == pytest.approx([0.02, 0.2, 0.4, 0.4])


def test_schedule_is_in_epochs_so_towers_do_not_change_it():
    # Doubling the towers at the same global batch keeps steps per epoch, hence the schedule; a
    # different global batch changes steps per epoch but the rate at a given EPOCH stays.
    a = EpochSchedule(0.1, "exponential_step", 100, 10, decay_epochs=(5,), gamma=0.1)
    b = EpochSchedule(0.1, "exponential_step", 50, 10, decay_epochs=(5,), gamma=0.1)
    assert lr_at(a, 499) == lr_at(b, 249) == pytest.approx(0.1)
    assert lr_at(a, 500) == lr_at(b, 250) == pytest.approx(0.01)


def test_lr_given_on_resume_takes_over_from_that_step():
    s = EpochSchedule(0.1, "cosine", steps_per_epoch=10, epochs=10, overrides=[[40, 0.01]])
    plain = EpochSchedule(0.1, "cosine", steps_per_epoch=10, epochs=10)
    assert lr_at(s, 39) == pytest.approx(lr_at(plain, 39))
    assert lr_at(s, 40) == pytest.approx(0.01)
    assert lr_at(s, 70) == pytest.approx(0.01 * lr_at(plain, 70) / lr_at(plain, 40))
    constant = EpochSchedule(0.1, "constant", 10, 10, overrides=[[5, 0.02], [30, 0.001]])
    assert [lr_at(constant, t) for t in (4, 5, 29, 30)] == pytest.approx([0.1, 0.02, 0.02, 0.001])


def test_optimizer_is_sgd_with_momentum_and_nesterov():
    config = with_defaults(TrainConfig(dataset="tiny_imagenet"))
    optimizer, schedule = build_optimizer(config, steps_per_epoch=10)
    assert optimizer.momentum == pytest.approx(0.9) and optimizer.nesterov
    assert lr_at(schedule, 0) == pytest.approx(config.lr)
