"""Tests for rundir/history.py: history.csv rows and the sums of a resumed epoch."""
import csv

import numpy as np
import pytest

from rundir.history import COLUMNS, EpochMeter, History


def row(epoch, **values):
    return {**{name: None for name in COLUMNS}, "epoch": epoch, "step": 10 * epoch, **values}


def test_rows_are_appended_under_one_header_and_later_epochs_dropped(tmp_path):
    history = History(str(tmp_path))
    for epoch in (1, 2, 3):
        history.append(**row(epoch, train_top1=0.5, heldout_top1=None))
    with open(tmp_path / "history.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == list(COLUMNS) and len(lines) == 4
    assert lines[1][COLUMNS.index("train_top1")] == "0.5"
    assert lines[1][COLUMNS.index("heldout_top1")] == ""  # not evaluated that epoch
    history.keep_epochs_up_to(1)
    history.append(**row(2, train_top1=0.75))
    assert [(r["epoch"], r["train_top1"]) for r in history.rows()] == [("1", "0.5"), ("2", "0.75")]
    assert not (tmp_path / "history.csv.tmp").exists()


def test_an_appended_row_is_taken_back_exactly_and_a_new_file_goes_with_it(tmp_path):
    history = History(str(tmp_path))
    history.append(**row(1))
    history.undo_append()  # the first save failed: no file, so the next append writes a header
    assert not (tmp_path / "history.csv").exists()
    history.append(**row(1))
    before = (tmp_path / "history.csv").read_bytes()
    history.append(**row(2))
    history.undo_append()
    assert (tmp_path / "history.csv").read_bytes() == before
    assert [r["epoch"] for r in history.rows()] == ["1"]


def test_a_row_needs_every_column(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        History(str(tmp_path)).append(epoch=1, step=3)


def test_epoch_meter_weights_by_steps_and_reads_back_from_a_vector():
    meter = EpochMeter()
    meter.add(3, 1.5, total_loss=2.0, cross_entropy=1.0, top1=0.0)
    meter.add(1, 0.5, total_loss=6.0, cross_entropy=3.0, top1=1.0)
    # (3 x 2 + 1 x 6) / 4 = 3; (3 x 1 + 3) / 4 = 1.5; one of four steps' batches all right.
    assert (meter.mean("total_loss"), meter.mean("cross_entropy"), meter.mean("top1")) == \
        (3.0, 1.5, 0.25)
    assert meter.train_seconds == 2.0
    assert meter.vector() == [4.0, 12.0, 6.0, 1.0, 2.0]
    assert EpochMeter.from_vector(np.array(meter.vector())).sums == meter.sums


def test_a_file_with_fewer_columns_gets_the_full_header_before_a_row_is_appended(tmp_path):
    # A history.csv without the averaged weights' columns, as a run resumed from it holds.
    older = ["epoch", "step", "train_loss", "train_cross_entropy", "train_top1", "heldout_loss",
             "heldout_top1", "heldout_top5", "lr", "images_per_second", "epoch_seconds",
             "wall_time"]
    with open(tmp_path / "history.csv", "w", newline="") as f:
        f.write(",".join(older) + "\n1,10,2.5,2.4,0.25,2.2,0.5,1,0.1,80,12.5,2026-12-01T10:00:00\n")
    history = History(str(tmp_path))
    history.append(**row(2, train_top1=0.75, heldout_ema_top1=0.5, heldout_top1=0.625))
    with open(tmp_path / "history.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == list(COLUMNS) and len(lines) == 3
    first, second = history.rows()
    assert (first["train_top1"], first["heldout_top1"], first["wall_time"]) == (
        "0.25", "0.5", "2026-12-01T10:00:00")
    assert (first["heldout_ema_top1"], first["heldout_ema_loss"]) == ("", "")
    assert (second["train_top1"], second["heldout_top1"], second["heldout_ema_top1"]) == (
        "0.75", "0.625", "0.5")
    history.undo_append()  # a failed save takes the row back; the older row stays, by name
    assert [(r["epoch"], r["heldout_top5"]) for r in history.rows()] == [("1", "1")]
