"""What every dataset reader returns: examples (file paths or decoded arrays) with their labels."""
import dataclasses
from typing import List, Optional, Union

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class Examples:
    """Either `paths` (image files) or `images` (uint8 N x H x W x 3), plus int `labels`."""
    labels: np.ndarray
    paths: Optional[np.ndarray] = None
    images: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if (self.paths is None) == (self.images is None):
            raise ValueError("Examples need exactly one of `paths` or `images`")
        if self.paths is not None:
            self.paths = np.asarray(self.paths, dtype=str)
        if len(self) != len(self.labels):
            raise ValueError(f"{len(self)} examples but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths if self.paths is not None else self.images)

    def subset(self, index: np.ndarray) -> "Examples":
        """The examples at `index` (positions or a boolean mask), in that order."""
        return Examples(self.labels[index],
                        paths=None if self.paths is None else self.paths[index],
                        images=None if self.images is None else self.images[index])


@dataclasses.dataclass
class RawDataset:
    """A reader's output. `test` is None when the dataset has no official test split.

    `test_name` names the held-out split scored during training ("val" for a folder's val/);
    `extra` holds any other held-out split by name (a folder with both val/ and test/), and
    `folders` the folders a pre-split folder was read from (recorded in the run directory).
    """
    class_names: list
    train: Examples
    test: Optional[Examples] = None
    test_name: str = "test"
    extra: dict = dataclasses.field(default_factory=dict)
    folders: Optional[dict] = None


@dataclasses.dataclass
class DatasetSplits:
    """The train / held-out split a run trains and evaluates on (plus any other held-out split,
    by name, in `extra`, and the validation split carved out of the training images)."""
    name: str
    data_dir: str
    class_names: list
    train: Examples
    test: Examples
    test_name: str = "test"
    extra: dict = dataclasses.field(default_factory=dict)
    layout: str = ""  # how the held-out set was made, for the start line
    # --val_fraction's share of the training images, scored each epoch to choose the best one
    # (None: no validation split). Taken out of `train`, never out of a held-out split.
    validation: Optional[Examples] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def held_out_names(self) -> List[str]:
        return [self.test_name, *self.extra]

    def held_out(self, name: Optional[str] = None) -> Examples:
        """The held-out split `name` (default: the one scored during training)."""
        return held_out_split(self, name, "this run")


def held_out_split(splits: Union[RawDataset, DatasetSplits], name: Optional[str],
                   owner: str) -> Examples:
    """`splits.test` or `splits.extra[name]` of a RawDataset or DatasetSplits; `owner` names
    whose splits they are in the error."""
    if name in (None, splits.test_name):
        return splits.test
    if name not in splits.extra:
        raise ValueError(f"--eval_split={name!r}: {owner}'s held-out splits are "
                         f"{', '.join([splits.test_name, *splits.extra])}")
    return splits.extra[name]


def is_image_file(name: str) -> bool:
    """An image file name by its extension, not a hidden file (macOS's ._ files)."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
