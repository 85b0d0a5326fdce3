"""Tests for rundir/plot.py: history.png from a history.csv, and the plot command."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from rundir import plot
from rundir.history import COLUMNS

ROWS = [  # epoch, held-out top-1 (empty: not scored that epoch), train top-1, epoch seconds
    (1, "0.41", "0.20", "600"), (2, "", "0.35", "590"), (3, "0.70", "0.50", "610"),
    (4, "0.81", "0.60", "605"), (5, "0.86", "0.65", "600")]


def _write_history(run_dir):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "history.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for epoch, held_out, train, seconds in ROWS:
            writer.writerow(dict(epoch=epoch, step=epoch * 10, train_loss="1.5",
                                 train_cross_entropy=str(2.0 - float(train)), train_top1=train,
                                 heldout_loss=held_out and str(2.0 - float(held_out)),
                                 heldout_top1=held_out, heldout_top5=held_out, lr="0.01",
                                 images_per_second="80", epoch_seconds=seconds,
                                 wall_time="2026-12-01T10:00:00+00:00"))


def test_the_plot_has_one_point_per_row_in_its_colour(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_history(run_dir)
    path = os.path.join(run_dir, "history.png")
    drawn = plot.plot_history(plot.read_history(os.path.join(run_dir, "history.csv")), path)
    assert os.path.getsize(path) > 1000
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (2 * plot.PANEL[1], 2 * plot.PANEL[0], 3)
    for panel in ("top-1 (%) by epoch", "top-1 (%) by hours", "loss by epoch", "loss by hours"):
        assert len(drawn[panel]["train"]) == 5      # every row
        assert len(drawn[panel]["held-out"]) == 4   # every scored row
        for series, colour in (("train", plot.TRAIN), ("held-out", plot.HELD_OUT)):
            for x, y in drawn[panel][series]:
                assert tuple(image[int(round(y)), int(round(x))]) == colour


def test_points_are_placed_by_epoch_and_by_the_hours_summed_so_far(tmp_path):
    rows = plot.read_history(_write_history(str(tmp_path)) or str(tmp_path / "history.csv"))
    curves = plot.curves(rows)
    assert curves["top-1 (%) by epoch"]["held-out"] == [(1, 41.0), (3, 70.0), (4, 81.0),
                                                        (5, 86.0)]
    hours = [x for x, _ in curves["top-1 (%) by hours"]["train"]]
    np.testing.assert_allclose(hours, np.cumsum([600, 590, 610, 605, 600]) / 3600)


def test_the_plot_command_writes_beside_history_and_names_a_missing_one(tmp_path, capsys):
    _write_history(str(tmp_path / "run"))
    assert plot.main([str(tmp_path / "run")]) == 0
    assert os.path.getsize(tmp_path / "run" / "history.png") > 0
    assert plot.main([str(tmp_path / "empty")]) == 1
    assert "history.csv' does not exist" in capsys.readouterr().err


def test_the_averaged_weights_curves_are_drawn_when_the_history_has_them(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_history(run_dir)
    assert "averaged" not in plot.curves(plot.read_history(os.path.join(run_dir, "history.csv")))[
        "loss by epoch"]
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    for row, ema in zip(rows, ["0.30", "", "0.75", "0.85", "0.90"]):
        row.update(heldout_ema_top1=ema, heldout_ema_top5=ema,
                   heldout_ema_loss=ema and str(2.0 - float(ema)))
    curves = plot.curves(rows)
    assert curves["top-1 (%) by epoch"]["averaged"] == [(1, 30.0), (3, 75.0), (4, 85.0),
                                                        (5, 90.0)]
    epochs, losses = zip(*curves["loss by epoch"]["averaged"])
    assert epochs == (1, 3, 4, 5) and losses == pytest.approx([1.7, 1.25, 1.15, 1.1])
    path = str(tmp_path / "averaged.png")
    drawn = plot.plot_history(rows, path)
    image = np.asarray(Image.open(path).convert("RGB"))
    for x, y in drawn["top-1 (%) by epoch"]["averaged"]:
        assert tuple(image[int(round(y)), int(round(x))]) == plot.AVERAGED
