"""Time and memory of the joint low-rank fit against per-task scikit-learn fits.

The headline case is N = 200,000 comparisons, d = 128, M = 20 tasks of
10,000 each, rank k = 5, drawn from a planted instance (logit std 1.5). The
joint fit `fit_lowrank` runs with the default ridge ``lambda = M / N``
(``ridge_scale = 1``). scikit-learn's ``LogisticRegression(solver="lbfgs")``
fits the 20 tasks one by one on the same arrays in the same process, with
``C = 1 / (2 lambda n_m)`` so that both minimise the same per-task penalty,
no intercept, scikit-learn's default tolerance and ``max_iter=1000``. Times
are the best of 3 runs (1 with ``--quick``), as wall time and as process
CPU time.

Memory is measured in a fresh subprocess per solver, in two ways:

- ``tracemalloc`` peak of the allocations made during the fit (numpy reports
  its buffers to tracemalloc), i.e. the extra memory on top of the data;
- ``ru_maxrss`` of the subprocess, the peak resident set of the whole process
  including the interpreter, numpy and the data.

Both are compared with the size of the feature matrix (N x d float64).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings
from typing import TextIO

import numpy as np

from solvers.data import TaskData
from solvers.lowrank import fit_lowrank
from solvers.simulate import make_planted_instance

DIMENSION = 128
N_TASKS = 20
RANK = 5


def _make_tasks(total: int, seed: int = 0) -> tuple[list[TaskData], np.ndarray]:
    instance = make_planted_instance(DIMENSION, RANK, N_TASKS, logit_std=1.5, seed=seed)
    rng = np.random.default_rng(seed)
    per_task = total // N_TASKS
    tasks = [instance.sample(m, per_task, rng) for m in range(N_TASKS)]
    return tasks, instance.source_thetas


def _relative_error(estimates: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimates - truth) / np.linalg.norm(truth))


def _fit_joint(tasks: list[TaskData]) -> tuple[np.ndarray, dict]:
    total = sum(task.n for task in tasks)
    fit = fit_lowrank(tasks, RANK, N_TASKS / total)
    return fit.thetas, {"converged": fit.converged, "n_iter": fit.n_iter}


def _fit_sklearn(tasks: list[TaskData]) -> tuple[np.ndarray, dict]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    total = sum(task.n for task in tasks)
    ridge = N_TASKS / total
    thetas = np.empty((DIMENSION, len(tasks)))
    iterations = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for m, task in enumerate(tasks):
            model = LogisticRegression(
                C=1.0 / (2.0 * ridge * task.n),
                fit_intercept=False,
                solver="lbfgs",
                max_iter=1000,
            )
            model.fit(task.X, task.y.astype(np.int64))
            thetas[:, m] = model.coef_[0]
            iterations.append(int(model.n_iter_[0]))
    not_converged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return thetas, {"converged": not_converged == 0, "n_iter": max(iterations)}


SOLVERS = {"lowrank": _fit_joint, "sklearn": _fit_sklearn}


def _timed(
    solver: str, tasks: list[TaskData], repeats: int = 1
) -> tuple[float, np.ndarray, dict]:
    """Fit ``repeats`` times; return the best wall time, the estimates and a summary.

    ``info["cpu_seconds"]`` is the best process CPU time of the fit (all
    threads), which other processes on the machine disturb less than the wall
    time. Taking the best of several runs, as ``timeit`` does, filters out
    pauses caused by other load.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        cpu_started = time.process_time()
        thetas, info = SOLVERS[solver](tasks)
        cpus.append(time.process_time() - cpu_started)
        walls.append(time.perf_counter() - started)
    info["cpu_seconds"] = min(cpus)
    return min(walls), thetas, info


def _memory_worker(solver: str, total: int) -> None:
    """Fit once in this process and write the memory figures as JSON."""
    tasks, _ = _make_tasks(total)
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    SOLVERS[solver](tasks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(
        json.dumps(
            {"extra_peak_bytes": peak - baseline, "maxrss_bytes": maxrss_kib * 1024}
        )
    )


def _measure_memory(solver: str, total: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.fit_speed",
        "--memory",
        solver,
        str(total),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _headline(total: int, repeats: int, out: TextIO) -> None:
    tasks, truth = _make_tasks(total)
    feature_bytes = total * DIMENSION * 8
    out.write(
        f"N={total:,}, d={DIMENSION}, M={N_TASKS}, k={RANK}; feature matrix "
        f"{feature_bytes / 2**20:.0f} MiB.\n"
    )
    # Warm-up: imports and first-call set-up stay out of the timings.
    warm_tasks, _ = _make_tasks(2_000, seed=1)
    for solver in SOLVERS:
        _timed(solver, warm_tasks)
    times, cpu_times = {}, {}
    for solver in SOLVERS:
        seconds, thetas, info = _timed(solver, tasks, repeats)
        times[solver] = seconds
        cpu_times[solver] = info["cpu_seconds"]
        out.write(
            f"  {solver:>8}: {seconds:7.2f} s wall, {info['cpu_seconds']:7.2f} s CPU, "
            f"converged={info['converged']}, "
            f"max n_iter={info['n_iter']}, relative error "
            f"||Theta_hat - Theta*||_F / ||Theta*||_F = "
            f"{_relative_error(thetas, truth):.4f}\n"
        )
    out.write(
        f"  time ratio lowrank / sklearn: wall "
        f"{times['lowrank'] / times['sklearn']:.2f}, CPU "
        f"{cpu_times['lowrank'] / cpu_times['sklearn']:.2f}\n"
    )
    del tasks
    for solver in SOLVERS:
        memory = _measure_memory(solver, total)
        extra = memory["extra_peak_bytes"]
        rss = memory["maxrss_bytes"]
        out.write(
            f"  {solver:>8} memory: tracemalloc extra peak {extra / 2**20:.0f} MiB "
            f"({extra / feature_bytes:.2f}x features); process ru_maxrss "
            f"{rss / 2**20:.0f} MiB ({rss / feature_bytes:.2f}x features)\n"
        )


def _scaling(totals: list[int], repeats: int, out: TextIO) -> None:
    out.write(
        f"\nScaling (d={DIMENSION}, M={N_TASKS}, k={RANK}):\n"
        f"{'N':>10} {'lowrank s':>10} {'sklearn s':>10} {'ratio':>6} "
        f"{'CPU ratio':>9} "
        f"{'lowrank it':>10} {'lowrank err':>11} {'sklearn err':>11}\n"
    )
    for total in totals:
        tasks, truth = _make_tasks(total)
        low_seconds, low_thetas, low_info = _timed("lowrank", tasks, repeats)
        sk_seconds, sk_thetas, sk_info = _timed("sklearn", tasks, repeats)
        cpu_ratio = low_info["cpu_seconds"] / sk_info["cpu_seconds"]
        out.write(
            f"{total:>10,} {low_seconds:>10.2f} {sk_seconds:>10.2f} "
            f"{low_seconds / sk_seconds:>6.2f} {cpu_ratio:>9.2f} "
            f"{low_info['n_iter']:>10} "
            f"{_relative_error(low_thetas, truth):>11.4f} "
            f"{_relative_error(sk_thetas, truth):>11.4f}\n"
        )
        out.flush()


def run(*, quick: bool = False, out: TextIO) -> None:
    """Run the headline comparison and the scaling table, writing to ``out``."""
    repeats = 1 if quick else 3
    out.write(f"Times are the best of {repeats} runs.\n")
    _headline(20_000 if quick else 200_000, repeats, out)
    totals = (
        [10_000, 30_000] if quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    )
    _scaling(totals, repeats, out)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        _memory_worker(sys.argv[2], int(sys.argv[3]))
    else:
        sys.stderr.write("usage: python -m benchmarks fit_speed [--quick]\n")
        raise SystemExit(2)
