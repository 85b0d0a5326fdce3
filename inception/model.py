"""`InceptionModel`: a trunk plus auxiliary heads that run only in training mode.

The trunk is a functional model whose outputs are every named endpoint ('3a'..'5b', ...) and the
main logits; the auxiliary classifiers are separate small models fed from trunk endpoints. Calling
the model in inference mode never runs them, so they cost nothing when evaluating or serving.
"""
import keras


class InceptionModel(keras.Model):
    """Returns {'logits', <aux names>...} when training, {'logits'} otherwise (all float32)."""

    def __init__(self, trunk, aux_heads=None, **kwargs):
        super().__init__(**kwargs)
        self.trunk = trunk
        # name -> (trunk endpoint it reads, head model)
        aux_heads = aux_heads or {}
        self.aux_sources = {name: source for name, (source, _) in aux_heads.items()}
        self.aux_names = tuple(aux_heads)
        # Plain attributes, not a dict: tf.train.Checkpoint does not see into Keras' tracked
        # dicts, so heads kept in one would silently be missing from every checkpoint.
        for name, (_, head) in aux_heads.items():
            setattr(self, f"{name}_head", head)
        self.image_size = trunk.inputs[0].shape[1]
        self.built = True

    @property
    def aux_heads(self):
        return {name: getattr(self, f"{name}_head") for name in self.aux_names}

    def call(self, images, training=False):
        endpoints = self.trunk(images, training=training)
        outputs = {"logits": endpoints["logits"]}
        if training:
            for name, head in self.aux_heads.items():
                outputs[name] = head(endpoints[self.aux_sources[name]], training=training)
        return outputs

    def endpoints(self, images, training=False):
        """Every named intermediate output of the trunk, e.g. '3a'..'5b' for GoogLeNet."""
        return self.trunk(images, training=training)
