"""What evaluate.py scores: its settings, declared apart from the evaluation itself.

flags.py makes the command-line flags of every entry point from these declarations (and from
TrainConfig's); keeping them here lets it do so without loading the evaluation application
(evaluation/evaluate_run.py) into train.py.
"""
import dataclasses
import importlib.util
from typing import Optional

from input_pipeline.crops import CROP_COUNTS
from settings.choices import EXPORT_FORMATS, TFLITE_QUANTIZATIONS, WEIGHT_CHOICES
from settings.config import setting


@dataclasses.dataclass
class EvalSettings:
    """What evaluate.py scores. The fields without help text share train.py's flags of the same
    name (batch_size, num_gpus, towers_on_cpu, dataset, data_dir)."""
    run_dir: str = setting(None, "The run directory to evaluate or predict with.",
                           flag="checkpoint_dir")
    checkpoint: Optional[str] = setting(
        None, "A specific checkpoint (default: the latest), or best: the epoch with the best "
        "validation top-1 of a run trained with --val_fraction (<run_dir>/best/).")
    crops: int = setting(1, "Evaluation crops per image: centre, 10 (corners + centre, "
                         "mirrored) or the paper's 144; softmax averaged over them.",
                         lambda: CROP_COUNTS)
    batch_size: int = 64  # images per step, split across the towers
    tta: Optional[str] = None  # test-time augmentation; default: the run's own --tta
    num_gpus: Optional[int] = None
    towers_on_cpu: bool = False
    dataset: Optional[str] = None  # evaluate on other data with the same classes
    eval_split: Optional[str] = setting(
        None, "Which held-out split to score: for a pre-split folder with both val/ and test/, "
        "val (the default, scored during training) or test.")
    data_dir: Optional[str] = None
    export_dir: Optional[str] = setting(None, "Write a SavedModel for serving (JPEG/PNG bytes "
                                        "in, class probabilities and names out) to this "
                                        "directory.")
    export_format: str = setting(
        "saved_model", "What --export_dir holds: saved_model (encoded image bytes in, the "
        "evaluation preprocessing and --tta inside, class probabilities and names out) or tflite "
        "(model.tflite: preprocessed pixels in, probabilities out, no --tta; model.tflite.json "
        "beside it states the preprocessing) or onnx (model.onnx, the float32 pixels model, "
        "by tf2onnx: needs `pip install tf2onnx`).", lambda: EXPORT_FORMATS)
    tflite_quantization: str = setting(
        "none", "--export_format=tflite: none (float32), float16 (weights stored in float16) or "
        "int8 (weights and activations, calibrated on up to 200 of the run's training images); "
        "input and output stay float32.", lambda: TFLITE_QUANTIZATIONS)
    watch: bool = setting(False, "Evaluate each new checkpoint as training writes it; with "
                          "--checkpoint=best, each new best epoch's.")
    watch_timeout: float = setting(3600.0, "--watch: seconds to wait for a new checkpoint.")
    weights: Optional[str] = setting(
        None, "Which weights to score, predict with or export: ema (the averaged weights of a run "
        "trained with --ema_decay) or raw (the trained weights). Default: ema when the "
        "checkpoint holds averaged weights, else raw.", lambda: WEIGHT_CHOICES)


def check_export_settings(settings: EvalSettings) -> None:
    """Raises ValueError, in one line naming the flag, for export settings that cannot go
    together or are not valid choices: checked before a checkpoint or an image is read. (The
    flags refuse unknown names themselves; this covers EvalSettings made in code too.)"""
    for name, choices in (("export_format", EXPORT_FORMATS),
                          ("tflite_quantization", TFLITE_QUANTIZATIONS)):
        value = getattr(settings, name)
        if value not in choices:
            raise ValueError(f"--{name}={value}: must be one of {', '.join(choices)}")
    if settings.export_format != "saved_model" and not settings.export_dir:
        raise ValueError(f"--export_format={settings.export_format}: needs --export_dir, the "
                         f"directory to write the export to")
    if settings.export_format == "onnx" and importlib.util.find_spec("tf2onnx") is None:
        raise ValueError("--export_format=onnx: needs the tf2onnx package, which is not "
                         "installed (pip install tf2onnx)")
    if settings.tflite_quantization != "none" and settings.export_format != "tflite":
        raise ValueError(f"--tflite_quantization={settings.tflite_quantization}: applies to "
                         f"--export_format=tflite only (--export_format={settings.export_format})")
