"""The job's shape: this process's place among the workers of a multi-worker job, read once
from TF_CONFIG (set by hand or by a cluster launcher) by train.py and handed to the trainer."""
import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the job: one of `count` workers; the chief writes the run dir.
    `addresses` are every worker's, as TF_CONFIG gives them, in the order of their index."""
    multi_worker: bool = False
    index: int = 0
    count: int = 1
    is_chief: bool = True
    addresses: tuple = ()


def worker_from_tf_config(strategy="auto"):
    """Reads TF_CONFIG (set by hand or by a cluster launcher) to place this process.

    `auto` runs multi-worker when TF_CONFIG describes more than one task. Workers are numbered
    chief first, then the workers in order, the order MultiWorkerMirroredStrategy uses.
    """
    raw = os.environ.get("TF_CONFIG")
    if strategy == "mirrored" or (strategy == "auto" and not raw):
        return Worker()
    try:
        tf_config = json.loads(raw or "{}")
        cluster, task = tf_config["cluster"], tf_config["task"]
        tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        index = tasks.index((task["type"], int(task["index"])))
        addresses = tuple(str(a) for a in [*cluster.get("chief", []), *cluster.get("worker", [])])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a usable cluster description ({e!r}); expected e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}') from None
    if strategy == "auto" and len(tasks) < 2:
        return Worker()
    return Worker(True, index, len(tasks), is_chief=index == 0, addresses=addresses)
