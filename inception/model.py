"""`InceptionModel`: a trunk plus auxiliary heads that run only in training mode.

The trunk is a functional model whose outputs are every named endpoint ('3a'..'5b', ...) and the
main logits; the auxiliary classifiers are separate small models fed from trunk endpoints. Calling
the model in inference mode never runs them, so they cost nothing when evaluating or serving.
"""
import keras

from inception.layers import classifier


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


def assemble(images, x, endpoints, *, num_classes, dropout_rate, name, aux_sources=None,
             make_aux_head=None):
    """The ending every model of the family shares: the classifier on the last feature map `x`,
    a trunk model giving every endpoint, and the auxiliary heads, one per {aux name: endpoint} of
    `aux_sources`, each made by `make_aux_head(input_shape, aux_name)`."""
    classifier(x, num_classes, dropout_rate, endpoints)
    trunk = keras.Model(images, endpoints, name=name + "_trunk")
    heads = {aux: (source, make_aux_head(endpoints[source].shape[1:], aux))
             for aux, source in (aux_sources or {}).items()}
    return InceptionModel(trunk, heads, name=name)
