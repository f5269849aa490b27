"""Inference off the event loop: one worker thread, dropout off, `runtime.threads` threads."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from mnist_pipeline.model.inference import prepare_for_inference
from mnist_pipeline.model.predict import class_probabilities


class Predictor:
    """Runs a network on one digit at a time in its own worker thread.

    One worker whose torch ops use `threads` threads: the server then computes on exactly
    `runtime.threads` cores however many requests arrive, as `predict` does; more workers
    would each start their own thread team and oversubscribe a small machine. Requests
    queue for the worker while the event loop keeps answering others.
    """

    def __init__(self, model: nn.Module, threads: int) -> None:
        # Once, in place (the server owns it): eval mode (dropout off), batch norm folded.
        self.model = prepare_for_inference(model, in_place=True)
        self.threads = threads
        torch.set_num_threads(threads)
        self._worker = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="inference",
            initializer=torch.set_num_threads,  # per-thread under OpenMP: set it there too
            initargs=(threads,),
        )

    def probabilities(self, digit: np.ndarray) -> np.ndarray:
        """uint8 (28, 28) -> (10,) float32 probabilities, in the calling thread."""
        return class_probabilities(self.model, digit[None, None])[0]

    async def predict(self, digit: np.ndarray) -> np.ndarray:
        """Like `probabilities`, in the worker thread, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self.probabilities, digit)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
