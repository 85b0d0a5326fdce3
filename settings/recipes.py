"""One training recipe per dataset: its augmentation and its defaults for every TrainConfig setting.

A setting a run leaves unset takes its dataset's recipe, then `FALLBACK`; the recipe's decay epochs
fall at the same fractions of a run given other --epochs (`Recipe.decay_epochs_for`). The recipes
train well: the paper / MindSpore recipe for ImageNet-sized data, the Tiny ImageNet recipe of
docs/reference.md, "Variants the project covers", a short one for CIFAR-10 and a quick one for
the digits. docs/results.md, "The published recipes", gives each published recipe's command and
measured cost.
"""
import dataclasses
from typing import Optional

from input_pipeline.preprocessing import Augmentation


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a dataset trains: `settings` are TrainConfig defaults (by field name); collections of
    fewer than `small_below` training images train with `small_augmentation` instead."""
    settings: dict
    augmentation: Augmentation = Augmentation()
    small_augmentation: Optional[Augmentation] = None
    small_below: int = 0

    def decay_epochs_for(self, epochs: float) -> tuple:
        """The recipe's decay epochs for a run of `epochs` epochs, at the same fractions of the
        run as in the recipe's own length (70 of its 300 epochs is 7 of 30, 0.2333 of 1), so a
        short trial or a longer run keeps the schedule's shape. Unscaled when `epochs` is not a
        positive number, which settings/checks.py refuses."""
        own = tuple(self.settings.get("lr_decay_epochs", FALLBACK["lr_decay_epochs"]))
        length = self.settings["epochs"]
        valid = isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and epochs > 0
        if not valid or epochs == length:
            return own
        return tuple(e * epochs / length for e in own)

    def augmentation_for(self, num_train_images: int, crop_area=None,
                         random_erasing: float = 0.0, pad=None, alternate_flips=None,
                         **policies) -> Augmentation:
        """The augmentation for a collection of that size; `crop_area` (min, max), when given,
        replaces its crop's area range, `pad` its largest whole-image shift in pixels and
        `alternate_flips` its flips' rule;
        `random_erasing` is the probability of erasing a box;
        `policies`, Augmentation's mixup, cutmix, policy, magnitude and num_ops, replace its
        own (off in every recipe)."""
        augmentation = self.augmentation
        if self.small_augmentation is not None and num_train_images < self.small_below:
            augmentation = self.small_augmentation
        for name, value in (("crop_area", crop_area), ("pad", pad)):
            refusal = crop_refusal(name, augmentation)
            if value is not None and refusal is not None:
                raise ValueError(f"--{name} {refusal}")
        if crop_area is not None:
            augmentation = dataclasses.replace(augmentation, min_area=crop_area[0],
                                               max_area=crop_area[1])
        if pad is not None:
            augmentation = dataclasses.replace(augmentation, pad=pad)
        if alternate_flips is not None:  # Augmentation refuses it without flips
            augmentation = dataclasses.replace(augmentation, alternate_flips=alternate_flips)
        if random_erasing:
            augmentation = dataclasses.replace(augmentation, random_erasing=random_erasing)
        if policies:
            augmentation = dataclasses.replace(augmentation, **policies)
        return augmentation


def crop_refusal(name: str, augmentation: Augmentation) -> Optional[str]:
    """Why --crop_area or --pad (`name`) does not fit `augmentation`'s crop, or None when it
    does: each belongs to one crop kind. settings/checks.py says it before any data is read."""
    if name == "crop_area" and augmentation.crop != "inception":
        return (f"sets the range of Inception's area crops; this recipe shifts whole images "
                f"instead (crop={augmentation.crop!r}, up to {augmentation.pad} px): give --pad")
    if name == "pad" and augmentation.crop != "pad":
        return (f"sets the largest shift of whole images; this recipe crops Inception's way "
                f"instead (crop={augmentation.crop!r}): give --crop_area")
    return None


# What a recipe does not set.
FALLBACK = dict(width_multiplier=1.0, nesterov=False, lr_gamma=0.1, lr_decay_epochs=(),
                warmup_epochs=0, weight_decay=1e-4, label_smoothing=0.0, tta="none")

# A few thousand photos seen twenty times: Inception's 8%-area crops and hue shifts of up to a
# fifth of the colour circle (a red flower turned yellow) cost a small collection more than they
# add, and held-out accuracy drops (docs/results.md, "Small photo collections"). Large ones keep
# them: seen over many epochs, they are what the paper's accuracy rests on.
SMALL_COLLECTION = 100_000
SMALL_COLLECTION_AUGMENTATION = Augmentation(min_area=0.25, hue=0.0)

RECIPES = {
    # Mirrored digits are other symbols and small ones are unreadable: gentle crops, no flips.
    "digits": Recipe(
        dict(model="minigooglenet", width_multiplier=0.25, epochs=15, batch_size=32, lr=0.05,
             lr_schedule="cosine", warmup_epochs=1, weight_decay=5e-4, label_smoothing=0.0),
        Augmentation(min_area=0.6, flip=False, color_jitter=False)),
    "folder": Recipe(
        dict(model="googlenet_bn", epochs=60, batch_size=32, lr=0.02, lr_schedule="cosine",
             warmup_epochs=2, weight_decay=1e-4, label_smoothing=0.1),
        Augmentation(), small_augmentation=SMALL_COLLECTION_AUGMENTATION,
        small_below=SMALL_COLLECTION),
    "mini_imagenet": Recipe(
        dict(model="googlenet_bn", image_size=96, epochs=90, batch_size=64, lr=0.05,
             lr_schedule="cosine", warmup_epochs=2, weight_decay=1e-4, label_smoothing=0.1)),
    "tiny_imagenet": Recipe(
        dict(model="googlenet_64", epochs=70, batch_size=64, lr=0.01, nesterov=True,
             lr_schedule="polynomial", warmup_epochs=0, weight_decay=2e-4, label_smoothing=0.0),
        Augmentation(min_area=0.25)),
    # Time to accuracy on a 2-core CPU, with the fast-training literature's tricks that leave
    # the network as published (docs/reference.md, "Fast CIFAR-10 training"): the standard CIFAR
    # augmentation (4-px shifts, flips) at the native 32 px, a short warm-up then a linear decay
    # to zero at 15 epochs, Nesterov, label smoothing 0.2, held-out images also scored with their
    # mirrors and 1-px shifts (docs/results.md, "CIFAR-10"). The published 70-epoch recipe is in
    # docs/reference.md.
    "cifar10": Recipe(
        dict(model="minigooglenet", epochs=15, batch_size=128, lr=0.1, nesterov=True,
             lr_schedule="polynomial", warmup_epochs=2, weight_decay=5e-4, label_smoothing=0.2,
             tta="mirror_shift"),
        Augmentation(crop="pad", pad=4, color_jitter=False)),
    # MindSpore's recipe (docs/reference.md): lr 0.1 for batch 256, x0.3 at 70/140/210/280.
    "imagenet": Recipe(
        dict(model="googlenet_bn", epochs=300, batch_size=256, lr=0.1,
             lr_schedule="exponential_step", lr_decay_epochs=(70, 140, 210, 280), lr_gamma=0.3,
             warmup_epochs=1, weight_decay=1e-4, label_smoothing=0.1)),
}


def get_recipe(dataset: str) -> Recipe:
    if dataset not in RECIPES:
        raise ValueError(f"Unknown dataset {dataset!r}; valid names: {', '.join(sorted(RECIPES))}")
    return RECIPES[dataset]
