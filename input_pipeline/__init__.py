"""Datasets from disk into a cached, prefetched tf.data pipeline (no TFRecord step).

    splits = input_pipeline.load_dataset("folder", "flower_photos", split_dir="runs/flowers/data")
    pipeline = input_pipeline.InputPipeline(splits.train, image_size=224, training=True)
    for images, labels in pipeline.dataset(batch_size=64, epoch=0): ...
"""
from input_pipeline.builder import SAMPLINGS, InputPipeline
from input_pipeline.datasets import (
    CLASS_NAMES_FILE,
    DATASETS,
    VALIDATION_FILE,
    DatasetSpec,
    check_saved_split,
    get_dataset,
    load_dataset,
    read_class_names,
)
from input_pipeline.examples import DatasetSplits, Examples, RawDataset
from input_pipeline.image_header import MAX_IMAGE_PIXELS
from input_pipeline.preprocessing import Augmentation, cache_size, decode_image, preprocess_for_eval
from input_pipeline.store import CACHE_MODES

__all__ = ["Augmentation", "CACHE_MODES", "CLASS_NAMES_FILE", "DATASETS", "DatasetSpec",
           "DatasetSplits", "Examples", "InputPipeline", "MAX_IMAGE_PIXELS", "RawDataset",
           "SAMPLINGS", "VALIDATION_FILE", "cache_size", "check_saved_split", "decode_image",
           "get_dataset", "load_dataset", "preprocess_for_eval", "read_class_names"]
