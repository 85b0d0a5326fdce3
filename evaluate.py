"""Score a training run: top-1 / top-5, per-class report, confusion matrix; optionally export it.

    python evaluate.py --checkpoint_dir=runs/digits-minigooglenet
    python evaluate.py --checkpoint_dir=runs/... --crops=10          # or 144, as in the paper
    python evaluate.py --checkpoint_dir=runs/... --eval_split=test   # a folder's test/ beside val/
    python evaluate.py --checkpoint_dir=runs/... --watch             # beside a running train.py
    python evaluate.py --checkpoint_dir=runs/... --export_dir=serving/model   # SavedModel
    python evaluate.py --checkpoint_dir=runs/... --export_dir=mobile/model --export_format=tflite
    python evaluate.py --checkpoint_dir=runs/... --export_dir=mobile/int8 --export_format=tflite
        --tflite_quantization=int8                     # (one line) or float16; default none
    python evaluate.py --checkpoint_dir=runs/... --export_dir=mobile/onnx --export_format=onnx
"""
from host import entry  # first: it quiets TensorFlow before TensorFlow loads

# isort: split

from typing import List

from absl import app

import flags
from evaluation.evaluate_run import run
from settings.eval_settings import EvalSettings


def main(argv: List[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    settings = EvalSettings(**flags.given_settings(EvalSettings))
    if not settings.run_dir:
        raise app.UsageError("--checkpoint_dir (a run directory written by train.py) is required")
    run(settings)


if __name__ == "__main__":
    entry.run(main)
