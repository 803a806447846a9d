"""Load the items of the next batch in a thread pool while the current batch is computed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


def prefetch_batches(
    batches: Sequence[Sequence[T]],
    load: Callable[[T], torch.Tensor],
    *,
    workers: int = 4,
    pin_memory: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield ``torch.stack([load(item) for item in batch])`` for each batch, one batch ahead.

    Pillow releases the GIL while decoding and resizing, so threads overlap with the model.
    With ``workers=0`` items load inline, in order: on a CPU-bound device with few cores,
    decoding threads only compete with the model's own threads (measured slower). A loading
    error surfaces when its batch is reached.
    """
    if not batches:
        return
    if workers <= 0:
        for batch in batches:
            stacked = torch.stack([load(item) for item in batch])
            yield stacked.pin_memory() if pin_memory else stacked
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hps-load") as pool:

        def submit(batch: Sequence[T]) -> list[Future[torch.Tensor]]:
            return [pool.submit(load, item) for item in batch]

        pending = submit(batches[0])
        for index in range(len(batches)):
            following = submit(batches[index + 1]) if index + 1 < len(batches) else []
            try:
                stacked = torch.stack([future.result() for future in pending])
            except BaseException:
                for future in following:
                    future.cancel()
                raise
            yield stacked.pin_memory() if pin_memory else stacked
            pending = following
