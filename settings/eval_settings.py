"""What evaluate.py scores: its settings, declared apart from the evaluation itself.

flags.py makes the command-line flags of every entry point from these declarations (and from
TrainConfig's); keeping them here lets it do so without loading the evaluation application
(evaluation/evaluate_run.py) into train.py.
"""
import dataclasses
from typing import Optional

from input_pipeline.crops import CROP_COUNTS
from settings.choices import WEIGHT_CHOICES
from settings.config import setting


@dataclasses.dataclass
class EvalSettings:
    """What evaluate.py scores. The fields without help text share train.py's flags of the same
    name (batch_size, num_gpus, towers_on_cpu, dataset, data_dir)."""
    run_dir: str = setting(None, "The run directory to evaluate or predict with.",
                           flag="checkpoint_dir")
    checkpoint: Optional[str] = setting(None, "A specific checkpoint (default: the latest).")
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
    watch: bool = setting(False, "Evaluate each new checkpoint as training writes it.")
    watch_timeout: float = setting(3600.0, "--watch: seconds to wait for a new checkpoint.")
    weights: Optional[str] = setting(
        None, "Which weights to score, predict with or export: ema (the averaged weights of a run "
        "trained with --ema_decay) or raw (the trained weights). Default: ema when the "
        "checkpoint holds averaged weights, else raw.", lambda: WEIGHT_CHOICES)
