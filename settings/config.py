"""`TrainConfig`: every setting of a run, saved as the run directory's config.json.

Each field is declared once, here, with its help text and (for names) the registry its valid
values come from; flags.py turns the fields into the command-line flags and settings/checks.py
checks them. Settings left as None take the dataset's recipe (settings/recipes.py).

A `TrainConfig` is frozen: rundir/recorded.resolve_config builds and checks the run's config once,
and what the data decides when the run starts (the class count, whether a --lr given on resume
changes anything) is set in one place, training/builder.settled_config, by `dataclasses.replace`.
"""
import dataclasses
import math
import os
import typing
from typing import Any, Callable, Optional

import inception
import input_pipeline
from settings import choices, recipes

# Settings that define what a run is; a run directory refuses a command that changes them. The
# weights a run started from are one: once it has trained, its own checkpoints hold its weights.
IDENTITY_KEYS = ("dataset", "data_dir", "model", "image_size", "width_multiplier", "test_fraction",
                 "seed", "init_from", "val_fraction")


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a setting takes: from `low` to `high` (None: unbounded), each end open or
    closed, integers only when `integer`; None too when `optional` (then the default decides)."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if not is_number(value) or (self.integer and not isinstance(value, int)):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        """What a refused value is told, e.g. 'must be an integer >= 1'."""
        def show(bound: float) -> str:
            return f"{bound:g}" if isinstance(bound, float) else str(bound)
        bounds = [f"{'>' if self.low_open else '>='} {show(self.low)}" if self.low is not None
                  else None,
                  f"{'<' if self.high_open else '<='} {show(self.high)}" if self.high is not None
                  else None]
        kind = "an integer" if self.integer else "a number"
        return f"must be {kind} {' and '.join(b for b in bounds if b)}"


# The largest width multiplier accepted: 4x GoogLeNet is ~16x its parameters and compute, beyond
# what a machine of this project's users trains; a larger value is almost surely a typo.
MAX_WIDTH_MULTIPLIER = 4.0
MAX_SEED = 2 ** 31 - 1  # scikit-learn's split and TF's stateless seeds both take it
POSITIVE, NON_NEGATIVE, FRACTION = Range(0, low_open=True), Range(0), Range(0, 1, high_open=True)
COUNT, COUNT_OR_ZERO = Range(1, integer=True), Range(0, integer=True)


def setting(default: Any, help: str, choices: Optional[Callable[[], tuple]] = None,
            flag: Optional[str] = None, valid: Optional[Range] = None) -> Any:
    """A settings field with its flag's help text. `choices` returns the valid values from their
    registry (the flag is then an enum); `flag` names the flag when it differs from the field;
    `valid` is the range a number must lie in (settings/checks.py refuses any other)."""
    return dataclasses.field(default=default,
                             metadata=dict(help=help, choices=choices, flag=flag, valid=valid))


def _recipe_names():
    return tuple(sorted(recipes.RECIPES))


RECIPE = "Default: the dataset's recipe."


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # -- Data --------------------------------------------------------------------------------
    dataset: str = setting("digits", "Dataset layout to read (input_pipeline/); digits needs no "
                           "download.", _recipe_names)
    data_dir: Optional[str] = setting(
        None, "Where the dataset is. digits: where to write its JPEGs (default "
        "~/.cache/googlenet-tf/digits). folder: class folders, or train/ beside val/ and/or "
        "test/ holding class folders.")
    test_fraction: float = setting(0.3, "Held-out fraction for datasets without a test split "
                                   "(stratified per class, saved in the run directory).",
                                   valid=Range(0, 1, low_open=True, high_open=True))
    val_fraction: float = setting(
        0.0, "Validation fraction carved out of the TRAINING images (per class, seeded by "
        "--seed, saved in the run directory; never out of the test split), scored each epoch "
        "beside the test split to choose the best epoch (<run_dir>/best/) and for "
        "--early_stopping; 0: off.", valid=Range(0, 1, high_open=True))
    seed: int = setting(
        0, "Seed of the split, the shuffling, the augmentation, the initial weights and dropout.",
        valid=Range(0, MAX_SEED, integer=True))
    cache: str = setting(
        "auto", "Where decoded images are cached: memory; disk (raw pixels in a file); "
        "disk_jpeg (re-encoded JPEGs in a file: a fraction of the bytes, a decode per read); "
        "none. auto = memory if they fit in half the free RAM, else disk if raw pixels take no "
        "more than the data itself, else disk_jpeg.", lambda: input_pipeline.CACHE_MODES)
    cache_dir: Optional[str] = setting(None, "Directory for the disk cache (default "
                                       "<run_dir>/cache).")
    max_image_pixels: int = setting(
        input_pipeline.MAX_IMAGE_PIXELS, "Images whose header declares more pixels are skipped "
        "undecoded and listed in skipped_files.txt (default: Pillow's limit, "
        "Image.MAX_IMAGE_PIXELS).", valid=COUNT)
    # -- Model -------------------------------------------------------------------------------
    model: Optional[str] = setting(None, f"Network (inception/). {RECIPE}",
                                   inception.model_names)
    image_size: Optional[int] = setting(None, "Input size in pixels. Default: the recipe's, else "
                                        "the model's.")
    width_multiplier: Optional[float] = setting(None, "Scales every layer's channels (e.g. 0.25).",
                                                valid=Range(0, MAX_WIDTH_MULTIPLIER, low_open=True))
    dropout_rate: Optional[float] = setting(None, "Dropout before the classifier (default: the "
                                            "model's).", valid=Range(0, 1, high_open=True,
                                                                     optional=True))
    # -- Starting weights and what trains (training/finetune.py) ------------------------------
    init_from: Optional[str] = setting(
        None, "A new run's starting weights: a run directory (its latest checkpoint) or a "
        "checkpoint path, from which every weight whose name and shape match is loaded (the "
        "classifiers stay new when the class count or list differs); keras: "
        "keras.applications.InceptionV3's ImageNet weights, or a Keras .h5 weights file, for "
        "--model=inception_v3. A run that resumes reads its own checkpoint instead.")
    trainable: str = setting(
        "all", "What trains: all; head (the classifier and the aux heads only); from:<module>, "
        "e.g. from:4e (that module, the ones after it and the heads). What comes before is "
        "frozen, batch-norm statistics included.")
    # -- Imbalanced classes (training/class_balance.py) ---------------------------------------
    class_weight: str = setting(
        "none", "Loss weight of each class: none (every image weighs 1) or balanced (inverse to "
        "the class's count in the training split, the mean weight per image 1).",
        lambda: choices.CLASS_WEIGHTS)
    sampling: str = setting(
        "uniform", "How an epoch draws its training images: uniform (each once, in a random "
        "order) or balanced (a class drawn uniformly, then one of its images: every class equally "
        "often, the same number of images per epoch).", lambda: input_pipeline.SAMPLINGS)
    # -- Augmentation ------------------------------------------------------------------------
    crop_area: Optional[tuple] = setting(
        None, "Area of the random training crop, as min,max fractions of the image (Inception's "
        "crop: 0.08,1). Default: the recipe's (settings/recipes.py).")
    alternate_flips: Optional[bool] = setting(
        None, "Flip each training image in every other epoch (the first epoch's flip its own "
        "seeded coin) instead of by a new coin each epoch: over any two epochs every image is "
        "seen both ways (K. Jordan's airbench, for short schedules). Default: the recipe's "
        "(off in every recipe); refused for a recipe that does not flip (digits).")
    pad: Optional[int] = setting(
        None, "Largest shift in pixels of the whole-image training crop (the cifar10 recipe's "
        "zero-padded shifts, 4 there; 2 shifts less for short schedules); 0: no shift. "
        "Default: the recipe's (settings/recipes.py).",
        valid=Range(0, 64, integer=True, optional=True))
    random_erasing: float = setting(
        0.0, "Probability that a training image has a random box erased to mid-grey after its "
        "crop, flip and colour (random erasing / Cutout, keras.layers.RandomErasing: each side "
        "14% to 57% of the image's); 0: off. Never applied to held-out images.",
        valid=Range(0, 1))
    mixup: float = setting(
        0.0, "MixUp's alpha: each training batch is blended with a shuffled copy of itself, "
        "image and one-hot label alike, at a Beta(alpha, alpha) share per image "
        "(keras.layers.MixUp; 0.2 to 0.8 is usual); 0: off. The mixed labels are the targets of "
        "the main and auxiliary losses, after label smoothing's and class weights' own rules. "
        "With --cutmix too, each batch takes one of the two, 50/50.", valid=Range(0, 1))
    cutmix: float = setting(
        0.0, "CutMix's alpha: each training image gets a box pasted from another of its batch, "
        "its label mixed by the box's share of the area, drawn from Beta(alpha, alpha) "
        "(keras.layers.CutMix; 1 is usual); 0: off.", valid=Range(0, 1))
    augment_policy: str = setting(
        "none", "Augmentation policy on each training image after its crop, flip and colour and "
        "before random erasing: randaugment (keras.layers.RandAugment) or augmix "
        "(keras.layers.AugMix); none: off. Never applied to held-out images.",
        lambda: choices.AUGMENT_POLICIES)
    augment_magnitude: Optional[float] = setting(
        None, "Strength of --augment_policy, the Keras layer's `factor` in [0, 1]. Default: "
        "Keras' own, 0.5 for randaugment (about the paper's magnitude 9 of 10), 0.3 for augmix "
        "(the paper's severity 3 of 10).", valid=Range(0, 1, optional=True))
    augment_ops: int = setting(
        2, "RandAugment's number of ops applied to each image (Keras' and the paper's 2).",
        valid=COUNT)
    # -- Towers and batch --------------------------------------------------------------------
    num_gpus: Optional[int] = setting(None, "Number of towers, one per GPU. Default: every "
                                      "visible GPU, or one CPU tower without GPUs.",
                                      valid=Range(1, integer=True, optional=True))
    strategy: str = setting("auto", "auto: several machines (MultiWorkerMirroredStrategy) when "
                            "TF_CONFIG describes a cluster, else one machine's towers "
                            "(MirroredStrategy).", lambda: choices.STRATEGIES)
    towers_on_cpu: bool = setting(False, "Run the --num_gpus towers on logical CPU devices.")
    batch_size: Optional[int] = setting(None, "GLOBAL batch size, split evenly across the "
                                        f"towers. {RECIPE}", valid=COUNT)
    # -- Optimisation (schedules are in epochs, so they do not depend on the number of towers)
    epochs: Optional[int] = setting(None, "Epochs to train in all (raise it to train a run "
                                    "longer).", valid=COUNT)
    lr: Optional[float] = setting(None, "Learning rate for the global batch. Given on resume, it "
                                  "takes over from the current step.", valid=POSITIVE)
    lr_schedule: Optional[str] = setting(None, "Learning-rate schedule, in epochs.",
                                         lambda: choices.SCHEDULES)
    lr_decay_epochs: Optional[tuple] = setting(
        None, "exponential_step: epochs at which the rate is multiplied by --lr_gamma, e.g. "
        "70,140,210,280. Default: the recipe's, at the same fractions of the run when --epochs "
        "is given (70,140,210,280 of 300 epochs are 7,14,21,28 of --epochs=30).")
    lr_gamma: Optional[float] = setting(None, "exponential_step: the factor at each decay epoch; "
                                        "plateau: at each reduction.",
                                        valid=Range(0, 1, low_open=True))
    plateau_patience: int = setting(
        5, "plateau: evaluations without a higher validation top-1 (the score --early_stopping "
        "watches) before the rate is multiplied by --lr_gamma; needs --val_fraction.",
        valid=COUNT)
    warmup_epochs: Optional[float] = setting(None, "Linear learning-rate warm-up, in epochs.",
                                             valid=NON_NEGATIVE)
    optimizer: str = setting(
        "sgd", "sgd: momentum (--nesterov), --weight_decay as L2 in the loss; adamw or lamb: "
        "Keras' own, --weight_decay decoupled (each step a decayed weight shrinks by lr x "
        "decay). The same weights decay with each: conv and dense kernels. The recipes' --lr is "
        "SGD's, so adamw and lamb need --lr given (e.g. --lr=0.001 --weight_decay=0.05). A run "
        "keeps its optimizer once it has a checkpoint.", lambda: choices.OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum.", valid=FRACTION)
    nesterov: Optional[bool] = setting(None, "Nesterov momentum.")
    clip_norm: float = setting(
        0.0, "Clip the gradient to this global norm, taken after the towers' gradients are "
        "summed (the norm of the whole batch's gradient, whatever the number of towers); 0: "
        "off.", valid=NON_NEGATIVE)
    grad_accum_steps: int = setting(
        1, "Gradient accumulation: each tower's share of --batch_size runs as this many "
        "micro-batches, one after the other, whose gradients are summed into one update, the "
        "update of the whole batch in the activation memory of a micro-batch. Batch norm "
        "normalises each micro-batch by its own statistics.", valid=COUNT)
    weight_decay: Optional[float] = setting(None, "L2 weight decay on conv and dense kernels.",
                                            valid=NON_NEGATIVE)
    label_smoothing: Optional[float] = setting(None, "Label smoothing of the cross-entropy.",
                                               valid=FRACTION)
    tta: Optional[str] = setting(
        None, "Test-time augmentation of the held-out scoring, evaluate.py and the export: none; "
        "mirror = each image and its mirror, their softmax averaged; mirror_shift = those and "
        "both shifted a pixel up-left and down-right (6 views). The held-out scores are given "
        "with and without it. Default: the recipe's, else none.", lambda: choices.TTA)
    aux_weight: float = setting(0.3, "Weight of each auxiliary classifier's loss.",
                                valid=NON_NEGATIVE)
    ema_decay: float = setting(
        0.0, "Keep an exponential moving average of the weights with this decay per step (e.g. "
        "0.999 spans about the last 1000 steps; 0: off). The held-out split is scored with it "
        "too each epoch, and evaluate.py, predict.py and the export use it by default.")
    mixed_precision: Optional[bool] = setting(
        None, "16-bit compute: bfloat16 on CPUs, float16 with loss scaling on GPUs. Default: on "
        "for CPUs with native bfloat16 (AMX or AVX512_BF16), where it was measured faster at the "
        "same held-out accuracy; off elsewhere (docs/results.md, \"Precision on the CIFAR-10 "
        'recipe").')
    mixed_precision_dtype: str = setting(
        "auto", "The 16-bit type of --mixed_precision: auto = float16 with loss scaling on GPUs, "
        "bfloat16 on CPUs. Naming one turns mixed precision on unless --nomixed_precision.",
        lambda: choices.MIXED_PRECISION_DTYPES)
    jit_compile: bool = setting(False, "Compile each tower's forward and backward pass with XLA.")
    augment_on: str = setting(
        "auto", "Where training batches are cropped, flipped and colour-jittered: host (the input "
        "pipeline hands the towers float32 crops) or device (uint8 cached images and the sampled "
        "parameters go to each tower, which augments them: a third of the bytes and no host "
        "cores). Same result either way. auto = device on GPUs; on CPU towers, device when the "
        "recipe only shifts and flips (cifar10), host when it crops and resizes.",
        lambda: choices.AUGMENT_ON)
    deterministic: bool = setting(
        False, "Deterministic ops, so a run with a given --seed repeats exactly (slower).")
    # -- Run directory, logging, checkpoints -------------------------------------------------
    run_dir: Optional[str] = setting(None, "Run directory (default runs/<dataset>-<model>). "
                                     "Re-running a command resumes the run in it.")
    log_every: int = setting(20, "Steps between TensorBoard / progress-bar updates.",
                             valid=COUNT)
    checkpoint_every: int = setting(0, "Steps between checkpoints (besides every epoch).",
                                    valid=COUNT_OR_ZERO)
    keep_checkpoints: int = setting(3, "How many recent checkpoints to keep; 0 keeps every one "
                                    "(to --restart_from any epoch later).", valid=COUNT_OR_ZERO)
    eval_every_epochs: int = setting(1, "Epochs between held-out evaluations.", valid=COUNT)
    early_stopping: int = setting(
        0, "PATIENCE: stop when the validation top-1 (higher is better; the averaged weights' "
        "with --ema_decay) has not improved for this many evaluations; needs --val_fraction. "
        "0: off.", valid=COUNT_OR_ZERO)
    profile_steps: Optional[tuple] = setting(
        None, "A,B: a TensorBoard profiler trace of global steps A to B (1-based, as on "
        "TensorBoard's x axis) in <run_dir>/train/plugins/profile, for the Profile tab (pip "
        "install '.[profile]'). The chief worker profiles; a resumed run profiles the steps of "
        "the range it still runs.")
    # -- Set by the run, not by flags --------------------------------------------------------
    # A --lr given on resume, as ((step, lr), ...) (see optimization.py); lists in config.json.
    lr_overrides: tuple = ()
    num_classes: Optional[int] = None  # from the dataset, when the run starts
    # What the run resolved when it last started, read back by evaluate.py, predict.py and the
    # export instead of derived again (on another machine, or from a recipe edited since): the
    # Keras precision policy it trained in, and its training augmentation, whose crop and flips
    # decide the view it is scored on. None in a run saved before they were recorded
    # (evaluation.trained.trained_precision and trained_augmentation).
    precision: Optional[str] = None
    augmentation: Optional[input_pipeline.Augmentation] = None
    # The names of the settings the user gave (every command on the run so far): a run
    # directory without a checkpoint yet is resolved from them again
    # (rundir.recorded.resolve_config).
    given: tuple = ()

    def __post_init__(self) -> None:
        # Frozen all the way down: the overrides are pairs, not the lists JSON gives back.
        object.__setattr__(self, "lr_overrides", tuple(tuple(o) for o in self.lr_overrides))
        object.__setattr__(self, "given", tuple(self.given))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        check_known_settings(values)
        values = dict(values)
        for field in dataclasses.fields(cls):  # tuple settings are lists in config.json
            is_tuple = tuple in (field.type, *typing.get_args(field.type))
            if is_tuple and values.get(field.name) is not None:
                values[field.name] = tuple(values[field.name])
        if isinstance(values.get("augmentation"), dict):  # an object in config.json
            augmentation = dict(values["augmentation"])
            augmentation["aspect_ratio"] = tuple(augmentation["aspect_ratio"])
            values["augmentation"] = input_pipeline.Augmentation(**augmentation)
        return cls(**values)


def check_known_settings(values: dict) -> None:
    """Raises ValueError naming the keys of `values` that are not TrainConfig fields."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; valid: {sorted(known)}")


def field_defaults() -> dict:
    """Every TrainConfig field's own default, by name (None for most: the recipe decides)."""
    return {field.name: field.default for field in dataclasses.fields(TrainConfig)}


def normalised_paths(values: dict) -> dict:
    """`values` with `~` expanded in the path settings (a shell leaves it unexpanded after
    `--data_dir=`), and data_dir made absolute: it is saved and compared as the run's identity,
    so one folder spelled two ways (`~/x`, `/home/u/x`, `../x`) is one run's data."""
    values = dict(values)
    for key in ("data_dir", "run_dir", "cache_dir"):
        if isinstance(values.get(key), str):
            values[key] = os.path.expanduser(values[key])
    if isinstance(values.get("data_dir"), str):
        values["data_dir"] = os.path.abspath(values["data_dir"])
    return values


def settings_with_defaults(values: dict) -> dict:
    """`values` (settings by field name, e.g. the flags given) with every setting they leave
    out or None filled: the field's own default, then its dataset's recipe, then `FALLBACK`.

    Paths are normalised first (`normalised_paths`). The image size, when neither given nor in
    the recipe, is the model's own default; the run
    directory, when not given, is runs/<dataset>-<model>. Decay epochs not given fall at the
    recipe's fractions of the run's --epochs (`recipes.Recipe.decay_epochs_for`), so a smoke test
    with --epochs=1 keeps the recipe's shape instead of being refused for decay epochs the user
    never set. Settings, not a TrainConfig: the run directory decides what else goes in before
    the config is built (rundir.recorded.resolve_config), and a resumed run keeps its saved
    settings.
    """
    check_known_settings(values)
    filled = {**field_defaults(), **normalised_paths(values)}
    recipe = recipes.get_recipe(filled["dataset"])
    for key, value in {**recipes.FALLBACK, **recipe.settings}.items():
        if filled.get(key) is None:
            filled[key] = value
    if values.get("lr_decay_epochs") is None:
        filled["lr_decay_epochs"] = recipe.decay_epochs_for(filled["epochs"])
    if filled["image_size"] is None:
        filled["image_size"] = inception.default_image_size(filled["model"])
    if filled["run_dir"] is None:
        filled["run_dir"] = f"runs/{filled['dataset']}-{filled['model']}"
    return filled


@dataclasses.dataclass(frozen=True)
class GivenSettings:
    """The settings a command gave (by field name; flags left unset are None), normalised, and
    all settings with the rest filled from the defaults and the dataset's recipe: done once per
    start (`of`), then read by the run directory's resolution (rundir.recorded.resolve_config)."""
    given: dict
    filled: dict

    @classmethod
    def of(cls, given: dict) -> "GivenSettings":
        normalised = normalised_paths(given)
        return cls(normalised, settings_with_defaults(normalised))

    @property
    def run_dir(self) -> str:
        """The run directory they point at (--run_dir, else runs/<dataset>-<model>)."""
        return self.filled["run_dir"]


def with_defaults(config: TrainConfig) -> TrainConfig:
    """A copy of `config` with every None setting filled (`settings_with_defaults`)."""
    return TrainConfig.from_dict(settings_with_defaults(config.to_dict()))


def build_model_from_config(config: TrainConfig,
                            num_classes: Optional[int] = None) -> inception.InceptionModel:
    """The run's model (inception.build_model) from its settings."""
    options = dict(width_multiplier=config.width_multiplier)
    if config.dropout_rate is not None:
        options["dropout_rate"] = config.dropout_rate
    return inception.build_model(config.model, num_classes or config.num_classes,
                                 config.image_size, **options)
