"""train.py killed with SIGKILL at random moments, resumed by the same command each time, ends as
the uninterrupted run does (tests/crash.py; `python tests/crash.py --kills=100 ...` by hand)."""
import pathlib

import pytest
from crash import PHASES, format_report, run_crash_test

from conftest import write_image_folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    # 12 training images after the 30% hold-out: 3 steps per epoch at batch 4.
    root = tmp_path_factory.mktemp("crash") / "photos"
    write_image_folder(str(root), classes=("daisy", "roses", "tulips"), per_class=6, size=(36, 36))
    return str(root)


# Each kill costs a start of train.py (seconds of TensorFlow import, then tracing). The fast
# suite makes the first 4 of seed 12's kills: drawn at 0.59, 0.82, 0.83 and 0.18 of a start's
# expected length, past the start-up (about 0.4 of it) in training and held-out scoring, then
# within it. The slow set makes all 10 (about 3 minutes on 2 cores).
@pytest.mark.parametrize("kills", [4, pytest.param(10, marks=pytest.mark.slow)])
def test_killed_at_random_moments_and_resumed_gives_the_uninterrupted_run(
        data_dir: str, tmp_path: pathlib.Path, kills: int) -> None:
    # Six epochs of 3 steps, a checkpoint every 2 steps besides each epoch's (steps 2, 3, 4, 6,
    # 8, ...). A start takes seconds to import TensorFlow and to trace its first step, then an
    # epoch takes a fraction of a second: most kills land in those two. Seed 12 draws moments
    # spread over the run (about half past the start-up) rather than near the end of a start that
    # could finish the run at its second attempt, leaving only starts that score it again.
    report = run_crash_test(data_dir, str(tmp_path / "work"), kills=kills, seed=12, epochs=6,
                            checkpoint_every=2, log=print)
    print(format_report(report))  # shown with -s, or when the test fails
    assert report.failures == [], format_report(report)
    assert len(report.kills) == kills
    assert report.steps_per_epoch == 3 and report.expected_step == 18
    # Usually one crashed run; another when a start finished the first before its kill.
    assert report.runs and sum(run.kills for run in report.runs) == kills
    for run in report.runs:
        assert run.final_step == 18, run
        assert run.history_epochs == [1, 2, 3, 4, 5, 6], run
        assert run.tensors_compared > 100, run  # weights, batch norm statistics, optimizer
    hit = [phase for phase in PHASES if report.phase_counts[phase]]
    assert len(hit) >= 2, format_report(report)
