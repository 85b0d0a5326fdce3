"""The GoogLeNet (Inception) model family as Keras 3 models: no data and no training code here.

    model = inception.build_model("googlenet", num_classes=100, image_size=224)
    model(images, training=True)   # {'logits', 'aux1', 'aux2'}
    model(images)                  # {'logits'}
"""
from inception.googlenet import GOOGLENET_TABLE
from inception.layers import InceptionModule, InceptionWidths
from inception.model import InceptionModel
from inception.registry import (
                                MODELS,
                                ModelSpec,
                                build_model,
                                default_image_size,
                                get_model_spec,
                                min_image_size,
                                model_names,
                                module_names,
)

__all__ = ["GOOGLENET_TABLE", "InceptionModel", "InceptionModule", "InceptionWidths", "MODELS",
           "ModelSpec", "build_model", "default_image_size", "get_model_spec", "min_image_size",
           "model_names", "module_names"]
