"""Decode the images of the next batch while the model works on the current one.

On a GPU host decoding runs in a pool of processes (PNG decoding in Pillow holds the GIL for
much of its work, so threads topped out at ~400 images/s on 16 cores); on a CPU-bound host it
runs inline, because decoding workers only compete with the model's own threads.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from hps.preprocess import stack_pixels

T = TypeVar("T")


def default_decoders(device: torch.device) -> int:
    """Decoding processes for a device: none on CPU, most cores on a GPU host."""
    if device.type != "cuda":
        return 0
    return max(1, min(16, (os.cpu_count() or 2) - 2))


def make_decode_pool(processes: int) -> Executor | None:
    """A process pool for decoding (forkserver: safe after CUDA is initialised), or None."""
    if processes <= 0:
        return None
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("forkserver"))


def prefetch_batches(
    batches: Sequence[Sequence[T]],
    load: Callable[[T], np.ndarray],
    *,
    executor: Executor | None = None,
    pin_memory: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield each batch as one (N, 3, H, W) uint8 tensor, loading one batch ahead in
    ``executor`` (``load`` must then be picklable), or inline without one. A loading error
    surfaces when its batch is reached."""
    if not batches:
        return
    if executor is None:
        for batch in batches:
            stacked = stack_pixels([load(item) for item in batch])
            yield stacked.pin_memory() if pin_memory else stacked
        return

    def submit(batch: Sequence[T]) -> list[Future[np.ndarray]]:
        return [executor.submit(load, item) for item in batch]

    pending = submit(batches[0])
    for index in range(len(batches)):
        following = submit(batches[index + 1]) if index + 1 < len(batches) else []
        try:
            stacked = stack_pixels([future.result() for future in pending])
        except BaseException:
            for future in following:
                future.cancel()
            raise
        yield stacked.pin_memory() if pin_memory else stacked
        pending = following
