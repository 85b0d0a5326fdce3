"""The training library behind train.py: towers, the step, schedules, checkpoints, summaries, loop."""
