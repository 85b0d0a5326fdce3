"""What every dataset reader returns: examples (file paths or decoded arrays) with their labels."""
import dataclasses
from typing import Optional

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class Examples:
    """Either `paths` (image files) or `images` (uint8 N x H x W x 3), plus int `labels`."""
    labels: np.ndarray
    paths: Optional[np.ndarray] = None
    images: Optional[np.ndarray] = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if (self.paths is None) == (self.images is None):
            raise ValueError("Examples need exactly one of `paths` or `images`")
        if self.paths is not None:
            self.paths = np.asarray(self.paths, dtype=str)
        if len(self) != len(self.labels):
            raise ValueError(f"{len(self)} examples but {len(self.labels)} labels")

    def __len__(self):
        return len(self.paths if self.paths is not None else self.images)

    def subset(self, index):
        return Examples(self.labels[index],
                        paths=None if self.paths is None else self.paths[index],
                        images=None if self.images is None else self.images[index])


@dataclasses.dataclass
class RawDataset:
    """A reader's output. `test` is None when the dataset has no official test split."""
    class_names: list
    train: Examples
    test: Optional[Examples] = None


@dataclasses.dataclass
class DatasetSplits:
    """The train / held-out split a run trains and evaluates on."""
    name: str
    data_dir: str
    class_names: list
    train: Examples
    test: Examples

    @property
    def num_classes(self):
        return len(self.class_names)


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
