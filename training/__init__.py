"""The library behind the entry points: towers, step, schedules, checkpoints, summaries, loop."""
