"""Starting a model from weights trained elsewhere: our `inception_v3` from
`keras.applications.InceptionV3`'s ImageNet weights (the library side of `--init_from=keras`).

    model = inception.build_model("inception_v3", num_classes=10)
    report = init_from_keras_inception_v3(model, "imagenet")   # or a weights file, or a Keras model
    print(report.summary())

The two networks are the same graph: the same 94 conv -> batch norm -> ReLU units with the same
kernels, strides and padding, the same pools, and the branches of every mixed block concatenated in
the same order. Both expect images scaled to [-1, 1] (Keras' `inception_v3.preprocess_input` is
x / 127.5 - 1, as our input pipeline's). They differ in four ways, none of which changes the output:

- Keras' batch norm has no scale (`scale=False`, i.e. gamma = 1); ours learns one, so it is set to 1
  (the report lists these scales apart from the weights copied).
- Our classifier has dropout before it, a no-op at inference; Keras' has none.
- Our model has an auxiliary head on mixed7 (the paper's); Keras' has none, so it stays as built.
- Keras' top is a 1000-class Dense; ours has `num_classes` outputs. It is copied when the class
  count is 1000 and otherwise stays as built (freshly initialised for a new model).

How units are paired: not by name and not by creation order. Keras names its layers conv2d_N by a
process-wide counter, so the names depend on what was built before; and our builder creates a
block's convs in a different order from Keras' (in the 17x17 and 8x8 blocks the 1x1 branch is made
last), where several convs of a block share a kernel shape (mixed7 has three 1x1 768 -> 192 convs),
so an order- and shape-checked pairing could permute them silently. Instead each graph is walked
back from its classifier, visiting the inputs of every layer in argument order (for a concatenation
that is the order of its channels, which both models must agree on to compute the same function),
and the conv units are listed in that post-order. This order depends only on what the network
computes. Every pair is then checked for the same kernel shape, strides, padding, bias and
batch-norm epsilon before any weight is written, so a model of another shape (another
`width_multiplier`, another network) is refused with the first difference named and left untouched.
"""
import dataclasses
import os
from typing import Dict, List, Tuple, Union

import keras
import numpy as np

from inception.layers import ConvBlock

# Keras' ImageNet top: 1000 classes.
KERAS_CLASSES = 1000
@dataclasses.dataclass(frozen=True)
class InitReport:
    """What starting from other weights did, by variable path.

    `loaded`: our variables given the source's values. `scales_set_to_one`: our batch-norm scales
    set to 1 because the source's batch norm has none (exactly what it computes). `initialised`:
    our variables with no counterpart in the source, left as built. `unmatched`: the source's
    variables that went nowhere (the 1000-class top when our class count differs). `mismatched`:
    our variables whose counterpart in the source has another shape or stands for other classes,
    also left as built (a checkpoint of this program, training/finetune.py).
    """
    source: str
    loaded: Tuple[str, ...]
    scales_set_to_one: Tuple[str, ...]
    initialised: Tuple[str, ...]
    unmatched: Tuple[str, ...]
    loaded_values: int
    mismatched: Tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for the start of a run."""
        def names(paths):
            # Variables grouped by their layer, so the line names heads, not every bias.
            layers = sorted({path.rsplit("/", 1)[0] for path in paths})
            return ", ".join(layers) if layers else "none"
        line = (f"Weights from {self.source}: loaded {len(self.loaded)} weights "
                f"({self.loaded_values:,} values)")
        if self.scales_set_to_one:
            line += (f", {len(self.scales_set_to_one)} batch-norm scales set to 1 "
                     f"(the source has none)")
        line += f"; new: {names(self.initialised)}"
        if self.mismatched:
            line += (f"; did not match the source (another shape or class list), so new too: "
                     f"{names(self.mismatched)}")
        return line + f"; not used from the source: {names(self.unmatched)}"


def init_from_keras_inception_v3(model: keras.Model,
                                 source: Union[str, os.PathLike, keras.Model]) -> InitReport:
    """Copies every weight of a Keras InceptionV3 (include_top=True, 1000 classes) into our
    `inception_v3` `model` (from `inception.build_model`), in place, and says what it did.

    `source` is a built `keras.applications.InceptionV3`, the path of a weights file saved from
    one (`.weights.h5`, or the legacy `.h5` Keras downloads), or "imagenet" to have Keras download
    its ImageNet weights. Raises ValueError, before writing anything, when the model's conv units
    do not match Keras' one for one (see the module docstring for how they are paired).
    """
    reference, description = _keras_inception_v3(source)
    ours = _conv_units(model.trunk, model.trunk.get_layer("logits"))
    theirs = _conv_units(reference, reference.get_layer("predictions"))
    if len(ours) != len(theirs):
        raise ValueError(f"{model.name} has {len(ours)} conv units, Keras InceptionV3 has "
                         f"{len(theirs)}: not the same network")
    # Every assignment is decided before any is made, so a mismatch leaves the model as it was.
    assignments: List[Tuple[keras.Variable, np.ndarray]] = []
    set_to_one: List[keras.Variable] = []
    used = set()
    for index, ((conv, bn), (ref_conv, ref_bn)) in enumerate(zip(ours, theirs)):
        _check_same_unit(index, conv, bn, ref_conv, ref_bn)
        pairs = [(conv.kernel, ref_conv.kernel)]
        if conv.use_bias:
            pairs.append((conv.bias, ref_conv.bias))
        if bn is not None:
            pairs += [(bn.moving_mean, ref_bn.moving_mean),
                      (bn.moving_variance, ref_bn.moving_variance)]
            if bn.center:
                pairs.append((bn.beta, ref_bn.beta))
            if bn.scale and ref_bn.scale:
                pairs.append((bn.gamma, ref_bn.gamma))
            elif bn.scale:
                set_to_one.append(bn.gamma)
        assignments += [(ours_var, ref_var.numpy()) for ours_var, ref_var in pairs]
        used.update(id(ref_var) for _, ref_var in pairs)

    logits, predictions = model.trunk.get_layer("logits"), reference.get_layer("predictions")
    if tuple(logits.kernel.shape) == tuple(predictions.kernel.shape):
        for ours_var, ref_var in ((logits.kernel, predictions.kernel),
                                  (logits.bias, predictions.bias)):
            assignments.append((ours_var, ref_var.numpy()))
            used.add(id(ref_var))

    for variable, value in assignments:
        variable.assign(value)
    for gamma in set_to_one:
        gamma.assign(np.ones(gamma.shape, np.float32))
    written = {id(v) for v, _ in assignments} | {id(v) for v in set_to_one}
    name = variable_names(model)
    return InitReport(
        source=description,
        loaded=tuple(name[id(v)] for v, _ in assignments),
        scales_set_to_one=tuple(name[id(v)] for v in set_to_one),
        initialised=tuple(name.get(id(v), v.path) for v in model.weights if id(v) not in written),
        unmatched=tuple(v.path for v in reference.weights if id(v) not in used),
        loaded_values=sum(int(np.prod(value.shape)) for _, value in assignments))


def variable_names(model) -> Dict[int, str]:
    """{id(variable): its name} for every weight of an InceptionModel."""
    # Keras paths start at the layer inside each sub-model, so the aux head's classifier is
    # 'logits/kernel' like the main one: the head's name tells them apart.
    names = {id(v): v.path for v in model.trunk.weights}
    for head_name, head in model.aux_heads.items():
        names.update((id(v), f"{head_name}/{v.path}") for v in head.weights)
    return names


def _keras_inception_v3(source) -> Tuple[keras.Model, str]:
    if isinstance(source, keras.Model):
        return source, f"Keras InceptionV3 {source.name!r}"
    source = os.fspath(source)
    if source != "imagenet" and not os.path.exists(source):
        raise FileNotFoundError(f"No Keras InceptionV3 weights file at {source!r}")
    # Logits, not probabilities, at the top: the weights are the same either way.
    reference = keras.applications.InceptionV3(
        weights=source, include_top=True, classes=KERAS_CLASSES, classifier_activation=None)
    described = "ImageNet" if source == "imagenet" else repr(source)
    return reference, f"Keras InceptionV3 ({described} weights)"


def _layer_inputs(layer) -> list:
    if isinstance(layer, keras.layers.InputLayer):
        return []
    inputs = layer.input
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def graph_order(model: keras.Model, last: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers `last` depends on, in depth-first post-order over inputs in argument order."""
    producer = {id(layer.output): layer for layer in model.layers
                if not isinstance(layer.output, (list, tuple, dict))}
    order, seen = [], set()
    # Iterative, as the deepest path is a few hundred layers in Keras' graph.
    stack = [(last, False)]
    while stack:
        layer, inputs_done = stack.pop()
        if inputs_done:
            order.append(layer)
            continue
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        stack.append((layer, True))
        # Reversed onto the stack so the first input is walked first.
        for tensor in reversed(_layer_inputs(layer)):
            if id(tensor) not in producer:
                raise ValueError(f"{model.name}: cannot trace an input of layer {layer.name!r}")
            stack.append((producer[id(tensor)], False))
    return order


def _conv_units(model: keras.Model, last: keras.layers.Layer
                ) -> List[Tuple[keras.layers.Conv2D, keras.layers.BatchNormalization]]:
    """(conv, batch norm or None) for every conv `last` depends on, in `graph_order`.

    Ours are `ConvBlock`s holding both; Keras' are a Conv2D whose output feeds a
    BatchNormalization layer.
    """
    order = graph_order(model, last)
    consumers: Dict[int, list] = {}
    for layer in order:
        for tensor in _layer_inputs(layer):
            consumers.setdefault(id(tensor), []).append(layer)
    units = []
    for layer in order:
        if isinstance(layer, ConvBlock):
            units.append((layer.conv, layer.bn))
        elif isinstance(layer, keras.layers.Conv2D):
            after = consumers.get(id(layer.output), [])
            bns = [c for c in after if isinstance(c, keras.layers.BatchNormalization)]
            units.append((layer, bns[0] if len(after) == 1 and bns else None))
    return units


def _check_same_unit(index, conv, bn, ref_conv, ref_bn):
    def describe(c, b):
        return {"kernel": tuple(c.kernel.shape), "strides": tuple(c.strides),
                "padding": c.padding, "dilation": tuple(c.dilation_rate), "bias": c.use_bias,
                "batch norm": b is not None,
                # The epsilon changes the output: a different one could not give equal logits.
                "epsilon": b.epsilon if b is not None else None,
                "center": b.center if b is not None else None}
    ours, theirs = describe(conv, bn), describe(ref_conv, ref_bn)
    if ours != theirs:
        differ = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        raise ValueError(f"conv unit {index + 1} ({conv.path}) differs from Keras InceptionV3's "
                         f"({ref_conv.path}): " + ", ".join(
                             f"{k} {a} here, {b} in Keras" for k, (a, b) in differ.items()))
