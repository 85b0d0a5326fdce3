"""Fine-tuning: a new run that starts from other weights (--init_from) and trains only part of
the network (--trainable).

    source = find_init_source("runs/flowers-googlenet_bn")  # refused here when unusable
    report = initialise(model, source, class_names)          # pretrained.InitReport
    print(report.summary())                                  # what was loaded, what is new
    print(freeze(model, "googlenet_bn", "from:4e"))          # what trains

docs/usage.md, "Fine-tuning" says what a user sees.

A checkpoint of this program is matched to the new model by name and shape, and read with
tf.train.load_checkpoint, so the source model is never built. A weight's name is its path below
the model in the checkpoint's object graph (e.g. `trunk/_operations/12/bn/moving_mean`), the name
tf.train.Checkpoint itself restores by: the same in two models built alike, whatever their class
counts. The variables' own TensorFlow names cannot serve, as they are not unique (every branch of
GoogLeNet's module 3a holds an `inception_3a/kernel`). Nor can the checkpoint's keys: the
trainable weights are stored under the optimizer's path to them (TensorFlow keeps a variable once,
under the first path that reaches it), so the object graph is walked from the model instead.

Freezing a layer (`layer.trainable = False`) takes its weights out of `model.trainable_variables`,
so the training step computes no gradient for them and applies no weight decay to them (decay
only pulls a weight that is trained towards 0; on a frozen one it would add a constant to the
loss, nothing more). A frozen batch norm runs in inference mode, Keras' rule for a
non-trainable BatchNormalization: it normalises with its moving statistics and does not update
them, so the features the frozen layers compute are the source's, not drifting with the new data.
"""
import dataclasses
import os
from typing import Dict, List, NoReturn, Optional, Sequence, Set, Tuple

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

import inception
from rundir.layout import CONFIG_FILE, checkpoint_dir
from rundir.recorded import class_names_path, read_class_names
from settings.choices import KERAS_IMAGENET, is_keras_weights
from training.pretrained import (
    InitReport,
    graph_order,
    init_from_keras_inception_v3,
    variable_names,
)

# Where tf.train.Checkpoint stores its object graph, and the attribute of a variable's value.
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE = "VARIABLE_VALUE"
# The object under which training/checkpoints.py saves the model.
MODEL_KEY = "model"
# The layer every model of the family ends with, in its trunk and in each aux head.
CLASSIFIER = "logits"
NOT_A_SOURCE = ("there is no run directory, checkpoint (such as runs/<name>/checkpoints/ckpt-1050) "
                "or Keras .h5 weights file there; or keras, for Keras' ImageNet weights")


@dataclasses.dataclass(frozen=True)
class InitSource:
    """What --init_from names: Keras InceptionV3 weights (`keras_weights`: "imagenet" or a file),
    or a `checkpoint` of this program, with the `run_dir` it belongs to when it is in one."""
    value: str
    keras_weights: Optional[str] = None
    checkpoint: Optional[str] = None
    run_dir: Optional[str] = None

    def describe(self) -> str:
        if self.run_dir is not None:
            return f"run {self.run_dir!r} ({os.path.basename(self.checkpoint)})"
        return f"checkpoint {self.checkpoint!r}"


def _refuse(value: str, why: str) -> NoReturn:
    raise ValueError(f"--init_from={value}: {why}")


def find_init_source(value: str) -> InitSource:
    """The weights --init_from=`value` names, looked up (not read) when a new run starts; raises
    ValueError naming the flag when there are none to read."""
    path = os.path.expanduser(value)
    if is_keras_weights(value):
        if value == KERAS_IMAGENET:
            return InitSource(value, keras_weights="imagenet")
        if not os.path.isfile(path):
            _refuse(value, "no such Keras weights file")
        return InitSource(value, keras_weights=path)
    run_dir = None
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        run_dir = path
        checkpoint = tf.train.latest_checkpoint(checkpoint_dir(path))
        if checkpoint is None:
            _refuse(value, "this run directory holds no checkpoint yet (one is saved as each "
                           "epoch ends)")
    elif os.path.isdir(path):  # a run's checkpoints/ directory
        checkpoint = tf.train.latest_checkpoint(path)
        if checkpoint is None:
            _refuse(value, NOT_A_SOURCE)
    elif os.path.isfile(path + ".index"):
        checkpoint = path
    else:
        _refuse(value, NOT_A_SOURCE)
    if run_dir is None:  # <run_dir>/checkpoints/ckpt-N: its run knows its classes
        parent = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
        if os.path.isfile(os.path.join(parent, CONFIG_FILE)):
            run_dir = parent
    if not checkpoint_weights(checkpoint, value):
        _refuse(value, f"{checkpoint!r} holds no model (it is not a checkpoint of train.py)")
    return InitSource(value, checkpoint=checkpoint, run_dir=run_dir)


def checkpoint_weights(checkpoint: str, value: str = "") -> Dict[str, Tuple[str, str]]:
    """{weight name (its path below the model): (checkpoint key, TensorFlow's variable name)} of
    a checkpoint written by training/checkpoints.py; {} when it holds no model."""
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    except (tf.errors.OpError, ValueError) as error:
        _refuse(value or checkpoint, f"{checkpoint!r} cannot be read: "
                                     f"{str(error).splitlines()[0][:200]}")
    found: Dict[str, Tuple[str, str]] = {}

    def walk(node_id: int, path: str, above: Set[int]):
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            if attribute.name == VARIABLE_VALUE:
                found[path] = (attribute.checkpoint_key, attribute.full_name)
        for child in node.children:
            if child.node_id not in above:
                walk(child.node_id, f"{path}/{child.local_name}" if path else child.local_name,
                     above | {child.node_id})
    for child in graph.nodes[0].children:
        if child.local_name == MODEL_KEY:
            walk(child.node_id, "", {0, child.node_id})
    return found


def model_weights(model: keras.Model) -> Dict[str, keras.Variable]:
    """{weight name: variable} of `model`, named as `checkpoint_weights` names them."""
    view = tf.train.TrackableView(model)
    weights = {id(v): v for v in model.weights}
    found: Dict[str, keras.Variable] = {}

    def walk(trackable, path: str, above: Set[int]):
        for name, child in view.children(trackable).items():
            child_path = f"{path}/{name}" if path else name
            if id(child) in weights:
                found[child_path] = weights[id(child)]
            elif id(child) not in above:
                walk(child, child_path, above | {id(child)})
    walk(model, "", {id(model)})
    return found


def classifier_weights(model: keras.Model) -> List[keras.Variable]:
    """The weights whose meaning is the class list: the classifier's and each aux head's last
    layer."""
    parts = [model.trunk, *model.aux_heads.values()]
    return [v for part in parts for v in part.get_layer(CLASSIFIER).weights]


def init_from_checkpoint(model: keras.Model, checkpoint: str, description: str,
                         keep_new: Sequence[keras.Variable] = ()) -> InitReport:
    """Gives every weight of `model` the value of the weight of the same name and shape in
    `checkpoint` (one of this program's), in place, except those in `keep_new`; says what it did.
    """
    theirs = checkpoint_weights(checkpoint)
    reader = tf.train.load_checkpoint(checkpoint)
    shapes = reader.get_variable_to_shape_map()
    names = variable_names(model)
    kept = {id(v) for v in keep_new}
    loaded, mismatched, initialised, used, values = [], [], [], set(), 0
    assignments = []
    for path, variable in model_weights(model).items():
        if path not in theirs:
            initialised.append(names[id(variable)])
            continue
        key, _ = theirs[path]
        used.add(path)
        if id(variable) in kept or tuple(shapes[key]) != tuple(variable.shape):
            mismatched.append(names[id(variable)])
            continue
        assignments.append((variable, reader.get_tensor(key)))
        loaded.append(names[id(variable)])
        values += int(np.prod(variable.shape))
    for variable, value in assignments:
        variable.assign(value)
    return InitReport(
        source=description, loaded=tuple(loaded), scales_set_to_one=(),
        initialised=tuple(initialised), mismatched=tuple(mismatched),
        unmatched=tuple(full_name for path, (_, full_name) in theirs.items() if path not in used),
        loaded_values=values)


def initialise(model: keras.Model, source: InitSource, class_names: List[str]) -> InitReport:
    """Starts `model` (a new run's, for `class_names`) from `source`'s weights; raises ValueError
    naming the flag when none of them fits."""
    if source.keras_weights is not None:
        try:
            return init_from_keras_inception_v3(model, source.keras_weights)
        except ValueError as error:  # another network's shapes
            _refuse(source.value, str(error))
        except Exception as error:  # Keras' download raises a bare Exception when offline
            _refuse(source.value, f"Keras' InceptionV3 weights could not be read: "
                                  f"{str(error).splitlines()[0][:200]}")
    # The classifiers of other classes are not carried over even when their count matches: a
    # row of the source's classifier stands for the source's class of that index. The class
    # list is known when the checkpoint is in a run directory; otherwise the shapes decide.
    source_classes = None
    if source.run_dir is not None and os.path.isfile(
            class_names_path(source.run_dir)):
        source_classes = read_class_names(source.run_dir)
    keep_new = (classifier_weights(model)
                if source_classes is not None and source_classes != list(class_names) else ())
    report = init_from_checkpoint(model, source.checkpoint, source.describe(), keep_new)
    if not report.loaded:
        _refuse(source.value, f"no weight of {source.describe()} has the name and shape of one of "
                              f"this run's {model.name} (another model or width?)")
    return report


def frozen_layers(model: keras.Model, model_name: str, trainable: str) -> List[keras.layers.Layer]:
    """The trunk's layers --trainable=`trainable` freezes: none for `all`; all but the
    classifier for `head`; for `from:<module>`, every layer the output of the module before it
    (or of the stem) depends on. The aux heads always train."""
    if trainable == "all":
        return []
    trunk = model.trunk
    if trainable == "head":
        classifier = trunk.get_layer(CLASSIFIER)
        return [layer for layer in trunk.layers if layer is not classifier]
    modules = inception.module_names(model_name)
    index = modules.index(trainable.split(":", 1)[1])
    before = modules[index - 1] if index else "stem"
    producer = {id(layer.output): layer for layer in trunk.layers
                if not isinstance(layer.output, (list, tuple, dict))}
    return graph_order(trunk, producer[id(trunk.output[before])])


def freeze(model: keras.Model, model_name: str, trainable: str) -> Optional[str]:
    """Freezes what --trainable=`trainable` leaves out (see the module docstring); returns what
    trains, for the start line, or None when everything does."""
    def count(variables):
        return sum(int(np.prod(v.shape)) for v in variables)
    total = count(model.trainable_variables)
    for layer in frozen_layers(model, model_name, trainable):
        layer.trainable = False
    if trainable == "all":
        return None
    frozen_share = 1 - count(model.trainable_variables) / total
    # Rounded, but never to all or nothing when it is neither.
    share = ("over 99%" if 0.995 <= frozen_share < 1 else "under 1%" if 0 < frozen_share < 0.005
             else f"{frozen_share:.0%}") + " of the weights frozen"
    aux = {0: "", 1: " and aux head"}.get(len(model.aux_names), " and aux heads")
    heads = f"the classifier{aux}"
    if trainable == "head":
        return f"training {heads} only ({share})"
    module = trainable.split(":", 1)[1]
    modules = inception.module_names(model_name)
    index = modules.index(module)
    frozen = f"the stem to {modules[index - 1]}" if index else "the stem"
    return f"training {module} onwards and {heads} ({share}: {frozen})"
