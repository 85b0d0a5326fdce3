"""Multi-worker training on one machine: two real worker processes on 127.0.0.1 (issue: beyond one
machine). Both must finish, hold the same weights, and only the chief may write the run dir."""
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

from conftest import write_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from training import loop
    from training.run_dir import resolve_config
    data_dir, run_dir, out, epochs, model = sys.argv[1:6]
    config = resolve_config(dict(dataset="folder", data_dir=data_dir, run_dir=run_dir,
                                 model=model, image_size=32, width_multiplier=0.125,
                                 batch_size=4, epochs=int(epochs), log_every=1, lr=0.01,
                                 lr_schedule="constant", warmup_epochs=0,
                                 strategy="multi_worker"))
    printed = []
    trainer = loop.Trainer(config, print_fn=printed.append)
    result = trainer.train()
    print("START", next(line for line in printed if line.startswith("Training ")))
    model = trainer.model
    ordered = model.trunk.weights + [w for k in sorted(model.aux_heads)
                                     for w in model.aux_heads[k].weights]
    np.savez(out, *[v.numpy() for v in ordered])
    print("RESULT", trainer.worker.index, trainer.worker.is_chief, result["step"],
          trainer.role.write_dir, os.path.exists(trainer.role.write_dir))
""")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp_path, data_dir, run_dir, epochs, model, command_line=False, workers=None):
    """Two workers on 127.0.0.1 (at the addresses `workers`, by default two free ports): WORKER
    (which saves the weights and prints its start line), or with `command_line` the real
    train.py with the same settings."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = workers or [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": index}})}
        if command_line:
            args = [os.path.join(ROOT, "train.py"), "--dataset=folder", f"--data_dir={data_dir}",
                    f"--run_dir={run_dir}", f"--model={model}", "--image_size=32",
                    "--width_multiplier=0.125", "--batch_size=4", f"--epochs={epochs}",
                    "--log_every=1", "--lr=0.01", "--lr_schedule=constant", "--warmup_epochs=0",
                    "--strategy=multi_worker"]
        else:
            args = [str(script), data_dir, run_dir, str(tmp_path / f"w{index}.npz"), str(epochs),
                    model]
        processes.append(subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env))
    return processes


def test_two_workers_train_the_same_model(tmp_path):
    data_dir = str(tmp_path / "photos")
    write_image_folder(data_dir, classes=("a", "b", "c"), per_class=8, size=(36, 36))
    run_dir = str(tmp_path / "run")
    # GoogLeNet: its aux heads' weights must stay in step across workers too.
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = start_workers(tmp_path, data_dir, run_dir, epochs=2, model="googlenet",
                              workers=workers)
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail("the workers did not finish within 300 s (a hang)")
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]

    results = [out.split("RESULT ")[1].split() for out, _ in outputs]
    # 16 training images, 8 per worker, 2 per tower and step: 4 steps per epoch, 2 epochs.
    assert [r[:3] for r in results] == [["0", "True", "8"], ["1", "False", "8"]]
    assert results[1][3] != run_dir and not results[1][3].startswith(run_dir)
    assert results[1][4] == "False"  # the non-chief's scratch directory is gone
    # Each start line places its worker in the job, names both workers, and gives the job's
    # training set, towers and batch beside its own shard and tower.
    chief_line, other_line = [out.split("START ")[1].splitlines()[0] for out, _ in outputs]
    job = f"workers [{workers[0]}, {workers[1]}]: 16 train images in all, 8 readable in this "
    assert f"Training googlenet on folder as worker 0 of 2 (chief), {job}worker's shard" in (
        chief_line)
    assert f"Training googlenet on folder as worker 1 of 2, {job}worker's shard" in other_line
    assert "/ 8 test images (readable; " in chief_line
    assert "/ 8 test images (scored by the chief; " in other_line
    for line in (chief_line, other_line):
        assert ("3 classes, 2 workers x 1 tower(s), 2 in all (this one: [cpu_0]), global batch 4 "
                "across the job (2 per tower), 4 steps/epoch, lr 0.01 (constant), ") in line

    chief, other = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(chief.files) == len(other.files) > 10
    for key in chief.files:
        np.testing.assert_array_equal(chief[key], other[key])

    from training.run_dir import restore_model
    model, _, _, path, step = restore_model(run_dir)
    assert step == 8
    ordered = model.trunk.weights + [w for k in sorted(model.aux_heads)
                                     for w in model.aux_heads[k].weights]
    assert len(ordered) == len(chief.files)
    for i, variable in enumerate(ordered):
        np.testing.assert_array_equal(variable.numpy(), chief[f"arr_{i}"], err_msg=variable.path)
    # Only the chief's summaries: one events file per log directory.
    assert len(glob.glob(os.path.join(run_dir, "train", "events.*"))) == 1
    assert len(glob.glob(os.path.join(run_dir, "eval", "events.*"))) == 1


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
