"""`TrainConfig`: every setting of a run, saved as the run directory's config.json.

Settings left as None take the dataset's defaults (`DATASET_DEFAULTS`), recipes that train well:
the paper / MindSpore recipe for ImageNet-sized data, the Tiny ImageNet and CIFAR-10 recipes of
docs/reference.md, and a quick one for the digits.
"""
import dataclasses
from typing import Optional

# Settings that define what a run is; a run directory refuses a command that changes them.
IDENTITY_KEYS = ("dataset", "data_dir", "model", "image_size", "width_multiplier", "test_fraction",
                 "seed")


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: Optional[str] = None
    run_dir: Optional[str] = None
    model: Optional[str] = None
    image_size: Optional[int] = None
    width_multiplier: Optional[float] = None
    test_fraction: float = 0.3
    seed: int = 0
    cache: str = "auto"
    cache_dir: Optional[str] = None
    # Towers and batch
    num_gpus: Optional[int] = None
    strategy: str = "auto"                    # auto | mirrored | multi_worker (from TF_CONFIG)
    towers_on_cpu: bool = False
    batch_size: Optional[int] = None          # global: split evenly across the towers
    # Optimisation (schedules are in epochs, so they do not depend on the number of towers)
    epochs: Optional[int] = None
    lr: Optional[float] = None                # for the global batch
    lr_schedule: Optional[str] = None         # exponential_step | polynomial | cosine | constant
    lr_decay_epochs: Optional[tuple] = None   # exponential_step: multiply by lr_gamma at these
    lr_gamma: Optional[float] = None
    warmup_epochs: Optional[float] = None
    momentum: float = 0.9
    nesterov: Optional[bool] = None
    weight_decay: Optional[float] = None
    label_smoothing: Optional[float] = None
    aux_weight: float = 0.3
    dropout_rate: Optional[float] = None
    mixed_precision: Optional[bool] = None    # None: on where measured faster (devices.py)
    mixed_precision_dtype: str = "auto"       # auto (float16 on GPUs, bfloat16 on CPUs) | ...
    jit_compile: bool = False
    augment_on: str = "auto"                  # auto | host | device (devices.augment_on)
    deterministic: bool = False
    # Bookkeeping
    log_every: int = 20
    checkpoint_every: int = 0                 # steps; 0 = only at the end of every epoch
    keep_checkpoints: int = 3
    eval_every_epochs: int = 1
    # Set by the loop: a --lr given on resume, as [[step, lr], ...] (see optimization.py).
    lr_overrides: list = dataclasses.field(default_factory=list)
    num_classes: Optional[int] = None         # set from the dataset when the run starts

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown settings {sorted(unknown)}; valid: {sorted(known)}")
        values = dict(values)
        if values.get("lr_decay_epochs") is not None:
            values["lr_decay_epochs"] = tuple(values["lr_decay_epochs"])
        return cls(**values)


DATASET_DEFAULTS = {
    "digits": dict(model="minigooglenet", width_multiplier=0.25, epochs=15, batch_size=32, lr=0.05,
                   lr_schedule="cosine", warmup_epochs=1, weight_decay=5e-4, label_smoothing=0.0),
    "cifar10": dict(model="minigooglenet", epochs=70, batch_size=64, lr=5e-3,
                    lr_schedule="polynomial", warmup_epochs=0, weight_decay=5e-4,
                    label_smoothing=0.0),
    "tiny_imagenet": dict(model="googlenet_64", epochs=70, batch_size=64, lr=0.01, nesterov=True,
                          lr_schedule="polynomial", warmup_epochs=0, weight_decay=2e-4,
                          label_smoothing=0.0),
    # MindSpore's recipe (docs/reference.md): lr 0.1 for batch 256, x0.3 at 70/140/210/280.
    "imagenet": dict(model="googlenet_bn", epochs=300, batch_size=256, lr=0.1,
                     lr_schedule="exponential_step", lr_decay_epochs=(70, 140, 210, 280),
                     lr_gamma=0.3, warmup_epochs=1, weight_decay=1e-4, label_smoothing=0.1),
    "mini_imagenet": dict(model="googlenet_bn", image_size=96, epochs=90, batch_size=64, lr=0.05,
                          lr_schedule="cosine", warmup_epochs=2, weight_decay=1e-4,
                          label_smoothing=0.1),
    "folder": dict(model="googlenet_bn", epochs=60, batch_size=32, lr=0.02, lr_schedule="cosine",
                   warmup_epochs=2, weight_decay=1e-4, label_smoothing=0.1),
}
COMMON_DEFAULTS = dict(width_multiplier=1.0, nesterov=False, lr_gamma=0.1, lr_decay_epochs=(), warmup_epochs=0, weight_decay=1e-4,
                       label_smoothing=0.0)


def with_defaults(config):
    """A copy of `config` with every None setting filled from its dataset's defaults.

    The image size, when neither given nor in the dataset's defaults, is the model's own default.
    """
    import inception  # only for the model's default input size
    if config.dataset not in DATASET_DEFAULTS:
        raise ValueError(f"Unknown dataset {config.dataset!r}; valid names: "
                         f"{', '.join(sorted(DATASET_DEFAULTS))}")
    defaults = {**COMMON_DEFAULTS, **DATASET_DEFAULTS[config.dataset]}
    values = config.to_dict()
    for key, value in defaults.items():
        if values.get(key) is None:
            values[key] = value
    filled = TrainConfig.from_dict(values)
    if filled.image_size is None:
        filled.image_size = inception.default_image_size(filled.model)
    if filled.run_dir is None:
        filled.run_dir = f"runs/{filled.dataset}-{filled.model}"
    return filled
