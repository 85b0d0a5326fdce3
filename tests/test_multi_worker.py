"""Multi-worker training on one machine: two real worker processes on 127.0.0.1 (issue: beyond one
machine). Both must finish, hold the same weights and batch-norm moving statistics (the same as two
towers on one machine given the same batches), and only the chief may write the run dir."""
import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import cpu_devices, write_image_folder
from multi_worker_step import CASE_OPTIONS, CASES, train_case

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from training import loop
    from rundir.recorded import resolve_config
    data_dir, run_dir, out, epochs, model, image_size, precision = sys.argv[1:8]
    config = resolve_config(dict(dataset="folder", data_dir=data_dir, run_dir=run_dir,
                                 model=model, image_size=int(image_size),
                                 width_multiplier=0.125, batch_size=4, epochs=int(epochs),
                                 log_every=1, lr=0.01, lr_schedule="constant", warmup_epochs=0,
                                 strategy="multi_worker", mixed_precision=precision != "float32",
                                 mixed_precision_dtype=("auto" if precision == "float32"
                                                        else precision)))
    printed = []
    trainer = loop.Trainer(config, print_fn=printed.append)
    result = trainer.train()
    print("START", next(line for line in printed if line.startswith("Training ")))
    model = trainer.state.model
    ordered = model.trunk.weights + [w for k in sorted(model.aux_heads)
                                     for w in model.aux_heads[k].weights]
    np.savez(out, *[v.numpy() for v in ordered])
    with open(out.replace(".npz", ".json"), "w") as f:
        json.dump([v.path for v in ordered], f)
    print("RESULT", trainer.towers.worker.index, trainer.towers.worker.is_chief, result["step"],
          trainer.role.write_dir, os.path.exists(trainer.role.write_dir))
    if "top1" in result:  # the chief's held-out scores, as train.py prints them
        print(f"SCORES top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} "
              f"loss {result['loss']:.4f}")
""")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_env(workers, index):
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                     "task": {"type": "worker", "index": index}})}


def start_workers(tmp_path, data_dir, run_dir, epochs, model, command_line=False, workers=None,
                  image_size=32, precision="float32"):
    """Two workers on 127.0.0.1 (at the addresses `workers`, by default two free ports): WORKER
    (which saves the weights and prints its start line), or with `command_line` the real
    train.py with the same settings. `precision`: float32, bfloat16 or float16 (WORKER only)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = workers or [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = []
    for index in range(2):
        env = worker_env(workers, index)
        if command_line:
            args = [os.path.join(ROOT, "train.py"), "--dataset=folder", f"--data_dir={data_dir}",
                    f"--run_dir={run_dir}", f"--model={model}", "--image_size=32",
                    "--width_multiplier=0.125", "--batch_size=4", f"--epochs={epochs}",
                    "--log_every=1", "--lr=0.01", "--lr_schedule=constant", "--warmup_epochs=0",
                    "--strategy=multi_worker"]
        else:
            args = [str(script), data_dir, run_dir, str(tmp_path / f"w{index}.npz"), str(epochs),
                    model, str(image_size), precision]
        processes.append(subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env))
    return processes


def finish(processes, timeout=300):
    """Each process's (stdout, stderr) once all exited 0; a hang or a failure fails the test."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"the workers did not finish within {timeout} s (a hang)")
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return outputs


def assert_workers_agree(tmp_path, batch_norms):
    """Both workers saved the same weights, moving statistics included; the model has
    `batch_norms` batch norms, and each one's moving mean and variance trained away from their
    start (0 and 1). Returns the chief's weights in model order."""
    chief, other = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(chief.files) == len(other.files) > 10
    for key in chief.files:
        np.testing.assert_array_equal(chief[key], other[key])
    paths = json.loads((tmp_path / "w0.json").read_text())
    weights = [chief[f"arr_{i}"] for i in range(len(paths))]
    for kind, start in (("moving_mean", 0.0), ("moving_variance", 1.0)):
        statistics = [w for path, w in zip(paths, weights) if path.endswith(kind)]
        assert len(statistics) == batch_norms, kind
        assert all(np.abs(w - start).max() > 1e-6 for w in statistics), kind
    return weights


# GoogLeNet without and with batch norm (59: one per conv, the stem's 3, 6 per inception module,
# 1 per aux head): the aux heads' weights and the moving statistics must stay in step too.
# The fast suite trains MiniGoogLeNet (19 batch norms: the stem, 2 per inception module, 1 per
# downsample) in under half GoogLeNet's time; both GoogLeNets are in the slow set (about 70 s each
# on 2 cores): the fast suite's two-worker step test
# (test_two_workers_step_as_two_towers_on_one_machine) trains GoogLeNet's aux heads on two workers.
@pytest.mark.parametrize("model, batch_norms", [
    pytest.param("googlenet", 0, marks=pytest.mark.slow),
    pytest.param("googlenet_bn", 59, marks=pytest.mark.slow), ("minigooglenet", 19)])
def test_two_workers_train_the_same_model(tmp_path, model, batch_norms):
    data_dir = str(tmp_path / "photos")
    write_image_folder(data_dir, classes=("a", "b", "c"), per_class=8, size=(36, 36))
    run_dir = str(tmp_path / "run")
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = start_workers(tmp_path, data_dir, run_dir, epochs=2, model=model,
                              workers=workers)
    outputs = finish(processes)

    results = [out.split("RESULT ")[1].split() for out, _ in outputs]
    # 16 training images, 8 per worker, 2 per tower and step: 4 steps per epoch, 2 epochs.
    assert [r[:3] for r in results] == [["0", "True", "8"], ["1", "False", "8"]]
    assert results[1][3] != run_dir and not results[1][3].startswith(run_dir)
    assert results[1][4] == "False"  # the non-chief's scratch directory is gone
    # Each start line places its worker in the job, names both workers, and gives the job's
    # training set, towers and batch beside its own shard and tower.
    chief_line, other_line = [out.split("START ")[1].splitlines()[0] for out, _ in outputs]
    job = f"workers [{workers[0]}, {workers[1]}]: 16 train images in all, 8 readable in this "
    assert f"Training {model} on folder as worker 0 of 2 (chief), {job}worker's shard" in (
        chief_line)
    assert f"Training {model} on folder as worker 1 of 2, {job}worker's shard" in other_line
    assert "/ 8 test images (readable; " in chief_line
    assert "/ 8 test images (scored by the chief; " in other_line
    for line in (chief_line, other_line):
        assert ("3 classes, 2 workers x 1 tower(s), 2 in all (this one: [cpu_0]), global batch 4 "
                "across the job (2 per tower), 4 steps/epoch, lr 0.01 (constant), ") in line

    chief = assert_workers_agree(tmp_path, batch_norms)

    from evaluation.trained import restore_model
    restored, _, _, path, step = restore_model(run_dir)
    assert step == 8
    ordered = restored.trunk.weights + [w for k in sorted(restored.aux_heads)
                                        for w in restored.aux_heads[k].weights]
    assert len(ordered) == len(chief)
    for variable, saved in zip(ordered, chief):
        np.testing.assert_array_equal(variable.numpy(), saved, err_msg=variable.path)
    # Only the chief's summaries: one events file per log directory.
    assert len(glob.glob(os.path.join(run_dir, "train", "events.*"))) == 1
    assert len(glob.glob(os.path.join(run_dir, "eval", "events.*"))) == 1
    # evaluate.py on the chief's run directory scores what the chief printed at the end.
    scores = outputs[0][0].split("SCORES ")[1].split()
    evaluated = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                                f"--checkpoint_dir={run_dir}"], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    line = next(x for x in evaluated.stdout.splitlines() if "top-1 accuracy" in x).split()
    assert (line[2], line[5], line[11]) == (scores[1], scores[3], scores[5])


def test_two_workers_step_as_two_towers_on_one_machine(tmp_path):
    """The same global batches, each tower (worker) given the same half: two workers end with
    the weights and batch-norm moving statistics of two towers on one machine, for a model
    without batch norm and one with it, in float32 and bfloat16, and with the summed gradient
    clipped and accumulated over micro-batches."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    script = os.path.join(ROOT, "tests", "multi_worker_step.py")
    processes = [subprocess.Popen([sys.executable, script, str(tmp_path / f"w{index}_")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=worker_env(workers, index)) for index in range(2)]
    from training import devices
    strategy = devices.make_strategy(cpu_devices(2))
    expected = {case: train_case(strategy, model, policy, CASE_OPTIONS.get(case))
                for case, model, policy in CASES}
    finish(processes)
    for case, model, _ in CASES:
        saved = [np.load(tmp_path / f"w{index}_{case}.npz") for index in range(2)]
        moving = [np.load(tmp_path / f"w{index}_{case}_moving.npz") for index in range(2)]
        one_machine = expected[case]
        assert len(saved[0].files) == len(one_machine["weights"]) > 10
        for i, weight in enumerate(one_machine["weights"]):
            np.testing.assert_array_equal(saved[0][f"arr_{i}"], saved[1][f"arr_{i}"])
            np.testing.assert_allclose(saved[0][f"arr_{i}"], weight, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{case}, weight {i}")
        # MiniGoogLeNet's 19 batch norms (the stem, 2 per inception module, 1 per downsample),
        # each a mean and a variance; GoogLeNet has none.
        statistics = one_machine["moving"]
        assert len(statistics) == (2 * 19 if model == "minigooglenet" else 0)
        for i, (copies, start) in enumerate(zip(statistics, one_machine["initial_moving"])):
            np.testing.assert_array_equal(copies[0], copies[1])  # the two towers' copies
            assert np.abs(copies[0] - start).max() > 1e-4  # trained, not left as they started
            for index in range(2):  # each worker's one copy: the same, and the towers' value
                np.testing.assert_array_equal(moving[index][f"arr_{i}"], moving[0][f"arr_{i}"])
                np.testing.assert_allclose(moving[index][f"arr_{i}"][0], copies[0], rtol=1e-5,
                                           atol=1e-6, err_msg=f"{case}, statistic {i}")


# Every model of the registry, each at the smallest image size it takes here (Inception v3's
# valid-padded stem needs 75 px), with the batch norms each has (one per conv: GoogLeNet's
# 59 = the stem's 3, 6 per inception module, 1 per aux head; Inception v3's 94 convs and its aux
# head's 2), in float32 and bfloat16, and once in loss-scaled float16.
EVERY_MODEL = {"googlenet": (32, 0), "googlenet_bn": (32, 59), "googlenet_64": (32, 59),
               "minigooglenet": (32, 19), "inception_v3": (75, 96)}


def test_every_model_of_the_registry_is_trained_on_two_workers_below():
    from inception import model_names
    assert sorted(EVERY_MODEL) == model_names()


@pytest.mark.slow
@pytest.mark.parametrize("model, precision", [
    *[(m, p) for m in sorted(EVERY_MODEL) for p in ("float32", "bfloat16")],
    ("googlenet_bn", "float16")])
def test_every_model_trains_on_two_workers(tmp_path, model, precision):
    data_dir = str(tmp_path / "photos")
    image_size, batch_norms = EVERY_MODEL[model]
    write_image_folder(data_dir, classes=("a", "b", "c"), per_class=8,
                       size=(image_size + 4, image_size + 4))
    processes = start_workers(tmp_path, data_dir, str(tmp_path / "run"), epochs=1, model=model,
                              image_size=image_size, precision=precision)
    outputs = finish(processes, timeout=600)
    policy = "float32" if precision == "float32" else f"mixed_{precision}"
    for stdout, _ in outputs:  # the start line names the precision the worker trained in
        assert f", {policy}, augmented on the " in stdout.split("START ")[1]
    assert_workers_agree(tmp_path, batch_norms)


# About 100 s on 2 cores; test_two_workers_train_the_same_model keeps the job in the fast suite.
@pytest.mark.slow
def test_a_dying_worker_stops_the_job_and_a_restart_resumes(tmp_path):
    data_dir = str(tmp_path / "photos")
    write_image_folder(data_dir, classes=("a", "b", "c"), per_class=8, size=(36, 36))
    run_dir = str(tmp_path / "run")
    # MiniGoogLeNet: what is tested is the cluster's behaviour, over 160 steps.
    chief, other = start_workers(tmp_path, data_dir, run_dir, epochs=40, model="minigooglenet")
    index = os.path.join(run_dir, "checkpoints", "checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(index) and chief.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    other.kill()
    try:
        _, stderr = chief.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        chief.kill()
        pytest.fail("the chief hung after its peer died")
    other.communicate()
    assert chief.returncode != 0 and "UnavailableError" in stderr
    import tensorflow as tf
    saved = int(tf.train.load_variable(tf.train.latest_checkpoint(os.path.dirname(index)),
                                       "step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert 0 < saved < 160
    # Restarting every worker with train.py resumes from that checkpoint and finishes the 40
    # epochs; every worker exits 0 (a cluster launcher would mark the job failed otherwise) and
    # says what it did.
    restarted = start_workers(tmp_path, data_dir, run_dir, epochs=40, model="minigooglenet",
                              command_line=True)
    outputs = [p.communicate(timeout=300) for p in restarted]
    for process, (stdout, stderr) in zip(restarted, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    assert "Resumed from" in outputs[0][0] and "Done at step 160: test top-1" in outputs[0][0]
    assert "Worker 1 done at step 160; the chief evaluates" in outputs[1][0]
