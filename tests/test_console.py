"""Tests for host/console.py: the console progress bar of the first pass and epochs."""
from host.console import ProgressBar, format_value


def test_a_log_gets_the_start_the_end_and_whole_rates(capsys):
    bar = ProgressBar(1200, interval=3600)  # not a terminal under pytest: whole lines
    bar.update(0)
    bar.update(600, loss=1.23456, **{"img/s": 2283})   # within the interval: not drawn
    bar.update(1200, loss=0.5, **{"img/s": 2290})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("    0/1,200 [>") and "left" not in lines[0]
    assert lines[1].startswith("1,200/1,200 [====================]")
    assert "loss: 0.5000 - img/s: 2,290 - " in lines[1] and lines[1].endswith("s")


def test_values_are_formatted_for_people():
    assert format_value(14341) == "14,341" and format_value(0.123456) == "0.1235"
    assert format_value("disk") == "disk"


def test_time_left_follows_the_rate_since_the_first_update():
    bar = ProgressBar(100, enabled=False)
    bar.update(0)
    bar._first = (bar._first[0] - 10.0, 0)  # 10 s ago
    assert bar.line(50, {}).endswith("0:10 left")
