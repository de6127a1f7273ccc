"""`charrnn` for the distributed tests, with one fault injected: run by torchrun in place of `-m charrnn`.

CHARRNN_TEST_FAULT="kill:RANK:STEP" SIGKILLs that rank as it is about to train step STEP+1;
"kill:RANK:setup" SIGKILLs it before training, at its first barrier, and the other ranks get SIGTERM
just before theirs (what torchrun sends when it sees a rank die, at the worst moment of setup);
"stall:RANK:STEP" makes it sleep there instead, as a hung process would. With "kill", the other
ranks also get the SIGTERM that torchrun sends when it sees a rank die, at the worst time for them:
as they leave the process group after the failure, before they have printed why. Only the first
attempt misbehaves: a worker that torchrun restarted (TORCHELASTIC_RESTART_COUNT > 0) runs normally.
"untimed:RANK:0" makes that rank fail if it times the budget presets itself (rank 0 must choose).
"close:RANK:0" makes that rank exit with status 3 if leaving the job (`World.close`) leaves the
threads of charrnn's own collectives running, where they can abort the interpreter's shutdown.
"""

import os
import signal
import sys
import time

from charrnn import presets
from charrnn.cli import main
from charrnn.distributed import World
from charrnn.trainer import Trainer

kind, rank, step = os.environ["CHARRNN_TEST_FAULT"].split(":")
train_step = Trainer.train_step


def first_attempt() -> bool:
    return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def faulty_train_step(self, x, y, lr):
    if self.world.rank == int(rank) and self.progress.step == int(step) and first_attempt():
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        # Hung for good: not even the trainer's graceful SIGTERM handler answers, so torchrun's
        # SIGTERM ends it at once instead of after its 30 s grace period.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(120)
    return train_step(self, x, y, lr)


def untimed(*args, **kwargs):
    raise AssertionError(f"rank {rank} timed the presets itself")


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


close = World.close


def checked_close(self):
    before = threads()
    close(self)
    if self.rank == int(rank) and threads() >= before:
        print(f"rank {rank}: {threads()} threads after close, {before} before", file=sys.stderr, flush=True)
        os._exit(3)


barrier = World.barrier


def killed_barrier(self):
    if first_attempt():
        os.kill(os.getpid(), signal.SIGKILL)
    barrier(self)


def sigterm_then_barrier(self):
    if first_attempt():  # torchrun's SIGTERM, at the worst moment before training: just before a collective
        os.kill(os.getpid(), signal.SIGTERM)
    barrier(self)


def close_under_sigterm(self):
    if first_attempt():
        os.kill(os.getpid(), signal.SIGTERM)
    close(self)


if kind == "untimed":
    if os.environ["RANK"] == rank:
        presets.measure_speed = untimed
elif kind == "close":
    World.close = checked_close
else:
    Trainer.train_step = faulty_train_step
    if kind == "kill" and os.environ["RANK"] != rank:
        World.close = close_under_sigterm
        if step == "setup":
            World.barrier = sigterm_then_barrier
    elif step == "setup" and os.environ["RANK"] == rank:
        World.barrier = killed_barrier
main()
