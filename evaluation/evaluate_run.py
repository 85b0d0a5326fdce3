"""Scoring a run directory the way evaluate.py does: restore, predict, report, write, export."""
import dataclasses
import json
import os
import time
from typing import Callable, Iterator, List, Optional

import keras
import numpy as np
import tensorflow as tf

import input_pipeline
from evaluation import scoring
from evaluation.export import REPRESENTATIVE_IMAGES, check_export_target, export_model
from evaluation.trained import (
    restore_model,
    trained_augmentation,
    trained_precision,
    weights_to_use,
)
from host.console import ProgressBar
from input_pipeline.crops import crops_per_image, multi_crop_dataset
from input_pipeline.examples import Examples, held_out_split
from rundir.best import BEST, best_checkpoint
from rundir.layout import DONE_FILE, EVAL_LOG_DIR, checkpoint_dir, log_dir, split_dir
from rundir.recorded import class_names_path, load_run_config, read_class_names
from settings.config import TrainConfig
from settings.eval_settings import EvalSettings, check_export_settings
from training import devices


def examples_to_score(settings: EvalSettings, config: TrainConfig,
                      class_names: List[str]) -> Examples:
    """The run's saved held-out split, or (with --dataset / --data_dir) other data relabelled to
    the run's classes."""
    if settings.dataset is None and settings.data_dir is None:
        return input_pipeline.load_dataset(config.dataset, config.data_dir,
                                           split_dir=split_dir(settings.run_dir),
                                           ).held_out(settings.eval_split)
    name = settings.dataset or config.dataset
    raw = input_pipeline.get_dataset(name).read(settings.data_dir or config.data_dir)
    examples = (raw.train if raw.test is None else
                held_out_split(raw, settings.eval_split, repr(settings.data_dir or name)))
    known = {c: i for i, c in enumerate(class_names)}
    unknown = [c for c in raw.class_names if c not in known]
    if unknown:
        raise ValueError(f"{settings.data_dir or name!r} has classes the model does not know: "
                         f"{unknown[:10]} (the run knows {len(class_names)} classes, listed in "
                         f"{class_names_path(settings.run_dir)})")
    relabel = np.array([known[c] for c in raw.class_names])
    return dataclasses.replace(examples, labels=relabel[examples.labels])


def print_report(report: dict, class_names: List[str], crops: int, path: str,
                 print_fn: Callable[..., None] = print) -> None:
    """The report's scores and per-class table, as evaluate.py prints them."""
    used = report["crops_used"]
    note = ("" if used == crops else
            f" (--crops={crops} without the mirrored ones: the model trained without flips)")
    split = f" of the {report['split']} split" if report.get("split") else ""
    weights = "averaged" if report["weights"] == "ema" else "trained"
    views = ("" if report["tta"] == "none" else
             f", test-time augmentation {report['tta']} (softmax averaged over the views)")
    print_fn(f"Checkpoint {path} ({weights} weights): {report['count']} images{split}, {used} "
             f"crop(s) per image{note}{views}")
    print_fn(f"  top-1 accuracy {report['top1']:.4f}   top-5 accuracy {report['top5']:.4f}   "
             f"balanced accuracy {report['balanced']:.4f}   mean loss {report['loss']:.4f}")
    if "without_tta" in report:
        plain = report["without_tta"]
        print_fn(f"  without test-time augmentation: top-1 accuracy {plain['top1']:.4f}   "
                 f"top-5 accuracy {plain['top5']:.4f}   mean loss {plain['loss']:.4f}")
    print_fn(report["per_class_text"])


def write_report(run_dir: str, report: dict, class_names: List[str], step: int, crops: int,
                 path: str) -> None:
    """metrics*.json, confusion_matrix*.csv and TensorBoard scalars under run_dir/eval/."""
    out = log_dir(run_dir, EVAL_LOG_DIR)
    os.makedirs(out, exist_ok=True)
    # Scores of a split, weights or test-time augmentation chosen with --eval_split / --weights /
    # --tta go beside, not over, the default ones.
    suffix = ("_best" if report.get("best") else "") + (
        f"_{report['split']}" if report.get("split_chosen") else "") + (
        f"_{report['weights']}" if report.get("weights_chosen") else "") + (
        "" if crops == 1 else f"_{crops}crops") + (
        f"_tta-{report['tta']}" if report.get("tta_chosen") else "")
    metrics = {k: report[k] for k in ("top1", "top5", "balanced", "loss", "count")}
    metrics.update(checkpoint=path, step=step, weights=report["weights"], crops=crops,
                   crops_used=report["crops_used"], tta=report["tta"],
                   per_class=report["per_class"])
    if "without_tta" in report:
        metrics["without_tta"] = report["without_tta"]
    with open(os.path.join(out, f"metrics{suffix}.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    matrix = report["confusion_matrix"]
    with open(os.path.join(out, f"confusion_matrix{suffix}.csv"), "w") as f:
        f.write("true\\predicted," + ",".join(class_names) + "\n")
        for name, row in zip(class_names, matrix):
            f.write(name + "," + ",".join(str(int(v)) for v in row) + "\n")
    writer = tf.summary.create_file_writer(out)
    with writer.as_default(step=step):
        for key in ("top1", "top5", "balanced", "loss"):
            tf.summary.scalar(f"evaluate/{key}{suffix}", report[key])
        tf.summary.image(f"evaluate/confusion_matrix{suffix}",
                         scoring.confusion_image(matrix))
    writer.flush()


def test_time_augmentation(settings: EvalSettings, config: TrainConfig, mirror: bool) -> str:
    """evaluate.py's --tta, else the run's own; none with several --crops, which hold their own
    mirrors (given with them, --tta is refused), and for runs that score without any."""
    tta = settings.tta or config.tta or "none"
    if settings.tta not in (None, "none"):
        if settings.crops != 1:
            raise ValueError(f"--tta={tta}: test-time views are taken of one crop per image; "
                             f"--crops={settings.crops} averages crops (mirrored ones among them) "
                             f"instead. Pass one of the two")
        if not mirror:
            raise ValueError(f"--tta={tta}: the run in {settings.run_dir!r} trained without "
                             f"flips, so its test-time views cannot be mirrored; use --tta=none")
    return tta if settings.crops == 1 else "none"


def representative_images(settings: EvalSettings, config: TrainConfig, eval_fraction: float,
                          count: int = REPRESENTATIVE_IMAGES
                          ) -> Callable[[], Iterator[np.ndarray]]:
    """A function yielding up to `count` of the run's training images, one at a time as
    [1, S, S, 3] evaluation inputs (centre crop, [-1, 1]): the int8 TFLite export calibrates its
    activation ranges on them. A seeded sample, so the classes are mixed and a repeated export
    gives the same model."""
    train = input_pipeline.load_dataset(config.dataset, config.data_dir,
                                        split_dir=split_dir(settings.run_dir)).train
    chosen = np.sort(np.random.default_rng(0).permutation(len(train))[:count])
    sample = train.subset(chosen)

    def images():
        # multi_crop_dataset's one crop is the evaluation input, and it skips unreadable files.
        for crops, _ in multi_crop_dataset(sample, config.image_size, 1, 1,
                                           eval_fraction=eval_fraction,
                                           max_image_pixels=config.max_image_pixels):
            yield crops[:, 0].numpy()
    return images


def evaluate_checkpoint(settings: EvalSettings, strategy: tf.distribute.Strategy,
                        checkpoint: Optional[str] = None,
                        print_fn: Callable[..., None] = print) -> dict:
    """Scores one checkpoint (default: --checkpoint, else the latest) on the held-out split,
    prints and writes the report, and exports the model when asked; the report."""
    check_export_settings(settings)
    if settings.export_dir:
        check_export_target(settings.export_dir)  # before the scoring, not after it
    model, config, class_names, path, step = restore_model(
        settings.run_dir, checkpoint or settings.checkpoint, strategy=strategy,
        weights=settings.weights)
    weights = weights_to_use(path, settings.weights)
    examples = examples_to_score(settings, config, class_names)
    towers = strategy.num_replicas_in_sync
    per_tower = devices.check_batch_size(settings.batch_size, towers)
    # One line redrawn on a terminal, a line every 30 s in a log file (host/console.py).
    bar = ProgressBar(len(examples), enabled=print_fn is print)
    seen = [0]

    def progress(n: int) -> None:
        seen[0] += n
        bar.update(seen[0])
    # A model trained without flips is not scored on mirrored crops, and one trained on whole
    # shifted images (crop="pad") is scored on whole images.
    trained_with = trained_augmentation(config)
    mirror = trained_with.flip
    tta = test_time_augmentation(settings, config, mirror)
    probs, labels = scoring.predict_crops(model, strategy, examples, config.image_size,
                                             settings.crops, per_tower, progress, mirror,
                                             trained_with.eval_fraction, tta,
                                             config.max_image_pixels)
    report = scoring.full_report(probs, labels, class_names)
    report["crops_used"] = crops_per_image(settings.crops, mirror)
    report["tta"], report["tta_chosen"] = tta, settings.tta is not None
    report["split"], report["split_chosen"] = settings.eval_split, settings.eval_split is not None
    report["weights"], report["weights_chosen"] = weights, settings.weights is not None
    report["best"] = (checkpoint or settings.checkpoint) == BEST  # beside the latest's report
    print_report(report, class_names, settings.crops, path, print_fn)
    write_report(settings.run_dir, report, class_names, step, settings.crops, path)
    if settings.export_dir:
        policy = keras.mixed_precision.global_policy()
        if policy.name != "float32":
            # The served model computes in float32: bfloat16 is only fast on some machines.
            keras.mixed_precision.set_global_policy("float32")
            try:
                model = restore_model(settings.run_dir, path, weights=weights)[0]
            finally:
                keras.mixed_precision.set_global_policy(policy)
        tflite = settings.export_format == "tflite"
        representative = (representative_images(settings, config, trained_with.eval_fraction)
                          if tflite and settings.tflite_quantization == "int8" else None)
        export_model(settings.export_format, model, class_names, config.image_size,
                     settings.export_dir, trained_with.eval_fraction, tta,
                     settings.tflite_quantization, representative)
        what = {"saved_model": "a SavedModel", "onnx": "an ONNX model",
                "tflite": f"a TFLite model ({settings.tflite_quantization} quantization)"
                }[settings.export_format]
        print_fn(f"Exported {what} to {settings.export_dir}")
    report.update(step=step, checkpoint=path, probabilities=probs, labels=labels)
    return report


def watch(settings: EvalSettings, strategy: tf.distribute.Strategy,
          print_fn: Callable[..., None] = print, poll_seconds: float = 2.0) -> List[dict]:
    """Evaluates each new checkpoint as it appears (each new best epoch's with
    --checkpoint=best), until training has finished and the last one is scored, or nothing new
    comes for `watch_timeout` seconds. Returns the reports."""
    reports, done_path, waited_since = [], None, time.time()
    while True:
        latest = _watched(settings)
        if latest and latest != done_path:
            reports.append(evaluate_checkpoint(settings, strategy, latest, print_fn))
            done_path, waited_since = latest, time.time()
        if done_path and _finished(settings, done_path):
            print_fn("Training has finished; stopping.")
            return reports
        if time.time() - waited_since > settings.watch_timeout:
            print_fn(f"No new checkpoint for {settings.watch_timeout:.0f}s; stopping.")
            return reports
        time.sleep(poll_seconds)


def _watched(settings: EvalSettings) -> Optional[str]:
    """The checkpoint --watch scores now: best/'s with --checkpoint=best (None before the first
    evaluation chose one), else the latest."""
    if settings.checkpoint == BEST:
        return best_checkpoint(settings.run_dir, missing_ok=True)
    return tf.train.latest_checkpoint(checkpoint_dir(settings.run_dir))


def _finished(settings: EvalSettings, scored: str) -> bool:
    """Whether training has finished with `scored` the last checkpoint --watch will see: the final
    one, or with --checkpoint=best whatever best/ holds once the run is over (it chose before
    it finished)."""
    final = _final_checkpoint(settings.run_dir)
    if final is None:
        return False
    if settings.checkpoint == BEST:
        return _watched(settings) == scored
    return os.path.basename(final) == os.path.basename(scored)


def _final_checkpoint(run_dir: str):
    path = os.path.join(run_dir, DONE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["checkpoint"]


def run(settings: EvalSettings, print_fn: Callable[..., None] = print) -> List[dict]:
    """evaluate.py: scores the run's latest checkpoint (or each new one, with --watch) in the
    precision it trained in; the reports."""
    check_export_settings(settings)
    if settings.watch and settings.checkpoint not in (None, BEST):
        raise ValueError(f"--watch scores each new checkpoint as training writes it (each new "
                         f"best with --checkpoint=best); --checkpoint={settings.checkpoint} names "
                         f"one: leave out --watch to score it")
    if not os.path.isdir(settings.run_dir or ""):
        raise ValueError(f"--checkpoint_dir={settings.run_dir!r} is not a directory")
    config = load_run_config(settings.run_dir)  # a clear error before any work if not a run
    read_class_names(settings.run_dir)
    towers = devices.configure_towers(settings.num_gpus, settings.towers_on_cpu)
    # The precision the run trained in, so evaluate.py reproduces the scores train.py printed.
    keras.mixed_precision.set_global_policy(trained_precision(config, towers))
    strategy = devices.make_strategy(towers)
    if settings.watch:
        return watch(settings, strategy, print_fn)
    return [evaluate_checkpoint(settings, strategy, print_fn=print_fn)]
