"""Independent jobs (seeds, candidate recipes, a study's runs) side by side on a CPU: one process and one thread each.

Two training runs at once on one thread each do 1.3-1.6x the work of one run on two threads on the 2-core CPU the
budgets are set on (``make benchmark ARGS=--levers``): a LeNet-5 step is too small to keep two threads busy. A run's
weights depend on its thread count, so every job given to :func:`side_by_side` trains on exactly one thread,
whatever the number of lanes: the lanes decide only how many run at once, never a result. The lanes' processes
start with the first call and are kept for the next ones (:func:`close_lanes` stops them).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")

#: Environment variable: how many jobs run at once on a CPU (default: one per core PyTorch uses).
LANES_ENV = "PORTFOLIO_LANES"
#: The intra-op threads of every job run by :func:`side_by_side` on a CPU (part of its results' keys).
LANE_THREADS = 1


def lane_count(jobs: int) -> int:
    """How many jobs run at once: ``$PORTFOLIO_LANES``, else one per core PyTorch uses; at most ``jobs``."""
    wanted = os.environ.get(LANES_ENV, "").strip()
    if wanted and not (wanted.isdigit() and int(wanted) > 0):
        raise ValueError(f"{LANES_ENV}={wanted!r}: give a whole number of lanes, 1 or more (1: one job at a time)")
    return max(1, min(int(wanted) if wanted else torch.get_num_threads(), jobs))


@contextmanager
def one_thread() -> Iterator[None]:
    """PyTorch on :data:`LANE_THREADS` intra-op threads inside the block, as it was afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(LANE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def as_lanes_run(device: torch.device) -> Iterator[None]:
    """Inside the block, PyTorch's thread count as :func:`side_by_side` runs its jobs on ``device`` (for their keys)."""
    if device.type != "cpu":  # elsewhere the jobs run one by one, as they are
        yield
        return
    with one_thread():
        yield


def _pickled(work: Callable[..., T], job: bytes) -> bytes:
    """``work`` on a job sent as bytes, its result sent back as bytes (see :func:`side_by_side`)."""
    return pickle.dumps(work(*pickle.loads(job)), protocol=pickle.HIGHEST_PROTOCOL)


def _lane_start() -> None:
    torch.set_num_threads(LANE_THREADS)
    # an interrupt (Ctrl-C, a kernel's interrupt or shutdown reaches the whole process group) is the caller's to
    # handle: it stops the lanes itself (close_lanes), so a lane waiting for its next job ignores it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def side_by_side(work: Callable[..., T], jobs: Sequence[tuple[Any, ...]], device: torch.device,
                 costs: Sequence[float] | None = None) -> list[T]:
    """``work(*job)`` for each job, results in order: on a CPU in lanes of one thread each, elsewhere one by one.

    ``work`` must be importable (a module's function, not a notebook's) and its arguments and result picklable.
    ``costs`` (rough, any unit): the lanes start the longest jobs first, so that no long job is left to run alone
    at the end while the other lanes wait. A job that fails lets the others finish (what they store is kept), then
    its error is raised; an interrupt stops every lane at once.
    """
    if device.type != "cpu":  # a GPU runs one job at a time, as fast as it can
        return [work(*job) for job in jobs]
    lanes = lane_count(len(jobs))
    if lanes == 1:
        with one_thread():
            return [work(*job) for job in jobs]
    pool = _lanes(lane_count(sys.maxsize))  # as many as may ever run at once; a call uses what its jobs fill
    try:
        # by value, as bytes: multiprocessing's own pickler would move the caller's tensors into shared memory in
        # place (NumPy views of them would then point at freed memory) and needs a /dev/shm as large as the data
        order = sorted(range(len(jobs)), key=lambda i: -costs[i]) if costs is not None else range(len(jobs))
        futures: list[Any] = [None] * len(jobs)
        for i in order:
            futures[i] = pool.submit(_pickled, work, pickle.dumps(jobs[i], protocol=pickle.HIGHEST_PROTOCOL))
        wait(futures)
    except BaseException:  # an interrupt: no lane goes on training behind the user's back
        close_lanes(terminate=True)
        raise
    if any(isinstance(f.exception(), BrokenProcessPool) for f in futures):
        close_lanes(terminate=True)  # a lane died (out of memory, killed): the next call starts new ones
    return [pickle.loads(f.result()) for f in futures]  # the first failed job's error, once every job has ended


_POOL: dict[int, ProcessPoolExecutor] = {}  #: the lanes kept between calls, by their number (one entry at most)


def _lanes(lanes: int) -> ProcessPoolExecutor:
    """The lanes' processes, started once and kept: each call would otherwise wait seconds for them to import torch."""
    if lanes not in _POOL:
        close_lanes()
        context = mp.get_context("spawn")  # fork after OpenMP has started can hang; spawn starts clean
        _POOL[lanes] = ProcessPoolExecutor(lanes, mp_context=context, initializer=_lane_start)
    return _POOL[lanes]


def close_lanes(terminate: bool = False) -> None:
    """Stop the lanes' processes (at exit, to give their memory back, or after editing ``helpers`` in a live kernel:
    the lanes keep the code they imported); ``terminate``: without waiting."""
    for pool in _POOL.values():
        if terminate:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=not terminate, cancel_futures=True)
    _POOL.clear()


atexit.register(close_lanes)
