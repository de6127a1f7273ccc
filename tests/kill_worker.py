"""`charrnn` with a SIGKILL at a chosen moment, for tests/test_hostile.py: run in place of `-m charrnn`.

CHARRNN_TEST_KILL="step:N" kills the process as it is about to train step N+1 (mid-run, between a step
and the next); "save:N" kills it in the middle of writing its N-th checkpoint (half the file written to
the temporary name, nothing renamed). The moment is chosen, not timed, so the test kills exactly as
many times as it means to on any machine.
"""

import io
import os
import signal

import torch

from charrnn import checkpoint
from charrnn.cli import main
from charrnn.trainer import Trainer

kind, at = os.environ["CHARRNN_TEST_KILL"].split(":")
at = int(at)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if kind == "step":
    train_step = Trainer.train_step

    def killed_step(self, x, y, lr):
        if self.progress.step == at:
            kill()
        return train_step(self, x, y, lr)

    Trainer.train_step = killed_step
else:
    saves = 0
    real_save = torch.save

    def killed_save(obj, f, *args, **kwargs):
        global saves
        saves += 1
        if saves < at:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        kill()

    checkpoint.torch.save = killed_save  # (the module object is torch itself: only this process is affected)
main()
