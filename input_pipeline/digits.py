"""The default dataset, needing no download: scikit-learn's 1797 handwritten digits (10 classes).

The 8x8 images are upscaled to 32x32 and written once as real JPEG files in a class-per-folder tree,
then read through exactly the same JPEG path as any user's folder.
"""
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from input_pipeline import folder

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "googlenet-tf", "digits")
IMAGE_SIZE = 32


def write_digits_jpegs(target):
    """Writes the digits as JPEGs under target/<digit>/; atomic, so a killed run leaves no half
    tree."""
    from sklearn.datasets import load_digits  # the only dataset reader that needs scikit-learn data
    digits = load_digits()
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".digits-", dir=parent)
    try:
        for i, (image, label) in enumerate(zip(digits.images, digits.target)):
            pixels = np.round(image * (255 / 16)).astype(np.uint8)
            picture = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE),
                                                              Image.BICUBIC)
            class_dir = os.path.join(staging, str(label))
            os.makedirs(class_dir, exist_ok=True)
            picture.save(os.path.join(class_dir, f"digit_{i:04d}.jpg"), quality=95)
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(target):  # another process may have won the race; that is fine
            raise


def load(data_dir):
    target = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DIR))
    if not os.path.isdir(target):
        write_digits_jpegs(target)
    return folder.load(target)
