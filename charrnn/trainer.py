"""A truncated-BPTT trainer that knows nothing about the model it trains beyond the shared contract
`model(x, state, targets) -> (logits, loss, state)`.

The batcher decides what a batch is: `batch(epoch, k) -> (x, y)` and `batches_per_epoch(epoch)`.
Whatever state the model returns is carried (detached) into the next batch and reset at each
epoch, so a stateful RNN reads its streams continuously and a stateless model simply returns None.
AdamW, gradient-norm clipping, linear warmup then cosine decay over the run's progress, which is
measured in steps, epochs or elapsed time, whichever stop comes first, so a `max_time` run ends
with the rate fully decayed. Mixed precision through autocast (bf16 on CPU/CUDA, fp16 with a
GradScaler on CUDA). Everything needed to continue exactly is in `state_dict()`.
"""

from __future__ import annotations

import math
import sys
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .device import autocast, grad_scaler


@dataclass
class TrainConfig:
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.0  # the rate decays to lr * min_lr_ratio at the end of the run
    warmup_steps: int = 50
    weight_decay: float = 0.1  # on matrices only, not biases
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    max_steps: int | None = None
    max_epochs: float | None = None
    max_time: float | None = None  # seconds of training, evaluation included
    eval_interval: int = 0  # steps between validation passes; 0 = auto (see `_eval_points`)
    log_interval: int = 10  # steps between metric records and progress-bar updates
    seed: int = 1337

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # position of the next batch: epoch and batch index within it
    batch: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    chars: int = 0  # characters trained on
    best_val: float = math.inf
    evals: int = 0  # validation passes done


@dataclass
class Hooks:
    """What the pipeline wants to hear about; each hook receives the trainer."""

    on_step: list[Callable] = field(default_factory=list)
    on_log: list[Callable] = field(default_factory=list)  # (trainer, record)
    on_eval: list[Callable] = field(default_factory=list)  # (trainer, result, is_best)
    on_save: list[Callable] = field(default_factory=list)  # (trainer)


class Trainer:
    def __init__(self, model, config: TrainConfig, batcher, device: torch.device, precision: str,
                 evaluate: Callable | None = None, quiet: bool = False, compile: bool = False):
        if config.max_steps is None and config.max_epochs is None and config.max_time is None:
            raise ValueError("set at least one of max_steps, max_epochs, max_time")
        self.model = model.to(device)
        # What the training step calls. torch.compile wraps the model but shares its parameters, so
        # `self.model` (saved, evaluated, sampled) stays the plain module with plain state_dict keys.
        self.net = torch.compile(self.model) if compile else self.model
        self.config = config
        self.batcher = batcher
        self.device = device
        self.precision = precision
        self.evaluate = evaluate
        self.quiet = quiet
        self.hooks = Hooks()
        self.progress = Progress()
        self.state = None  # carried hidden state
        self.loss = None  # last step's loss (a tensor: reading it syncs the device)
        self.optimizer = self._make_optimizer()
        self.scaler = grad_scaler(device, precision)
        self._stop_requested = False
        torch.manual_seed(config.seed)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"  # one kernel for all parameters on CUDA
        return torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=fused)

    # --- schedule -----------------------------------------------------------------------------
    def fraction_done(self) -> float:
        """How far through the run we are, in [0, 1]: the furthest of the configured stops."""
        c, p = self.config, self.progress
        fracs = []
        if c.max_steps is not None:
            fracs.append(p.step / max(c.max_steps, 1))
        if c.max_epochs is not None:
            n = self.batcher.batches_per_epoch(p.epoch)
            fracs.append((p.epoch + p.batch / n) / c.max_epochs)
        if c.max_time is not None:
            fracs.append(p.elapsed / c.max_time)
        return min(max(fracs), 1.0)

    def lr_at(self, step: int, frac: float) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        floor = c.lr * c.min_lr_ratio
        return floor + 0.5 * (c.lr - floor) * (1 + math.cos(math.pi * min(frac, 1.0)))

    def _eval_due(self, frac: float) -> bool:
        """Auto: validation at evenly spaced fractions of the run. 10 of them for step/epoch budgets;
        for a time budget one a minute (2 to 20), since each pass spends the budget."""
        c, p = self.config, self.progress
        if c.eval_interval > 0:
            return p.step % c.eval_interval == 0
        if c.max_time is not None:
            n = max(2, min(20, round(c.max_time / 60)))
        else:
            n = 10
        return frac >= (p.evals + 1) / n

    # --- checkpointable state -----------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "rng": rng,
            "carry": None if self.state is None else [s.detach().cpu() for s in self.state],
        }

    def load_state_dict(self, sd: dict) -> None:
        self.optimizer.load_state_dict(sd["optimizer"])
        if sd["scaler"]:
            self.scaler.load_state_dict(sd["scaler"])
        self.progress = Progress(**sd["progress"])
        torch.set_rng_state(sd["rng"]["torch"])
        if "cuda" in sd["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(sd["rng"]["cuda"])
        carry = sd["carry"]
        self.state = None if carry is None else tuple(s.to(self.device) for s in carry)

    # --- the loop -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save, and return (what Ctrl-C does)."""
        self._stop_requested = True

    def _done(self) -> bool:
        c, p = self.config, self.progress
        return (
            (c.max_steps is not None and p.step >= c.max_steps)
            or (c.max_epochs is not None and p.epoch + p.batch / self.batcher.batches_per_epoch(p.epoch) >= c.max_epochs)
            or (c.max_time is not None and p.elapsed >= c.max_time)
        )

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        model, opt = self.model, self.optimizer
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.precision):
            _, loss, state = self.net(x, self.state, y)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        # carry the state into the next chunk, cut from this chunk's graph
        self.state = None if state is None else tuple(s.detach() for s in state)
        self.loss = loss.detach()

    def run(self) -> str:
        """Train until a stop; returns why it stopped: 'done' or 'interrupted'."""
        c, p = self.config, self.progress
        self.model.train()
        pin = self.device.type == "cuda"
        bar = tqdm(total=1000, disable=self.quiet, dynamic_ncols=True, leave=True,
                   bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")
        loss_sum, loss_n = torch.zeros((), device=self.device), 0
        window_t0, window_chars = time.perf_counter(), 0
        previous = self._install_sigint()
        reason = "done"
        try:
            t_last = time.perf_counter()
            while not self._done():
                if self._stop_requested:
                    reason = "interrupted"
                    break
                if p.batch == 0:
                    self.state = None  # a new epoch's streams do not continue the last epoch's
                x, y = self.batcher.batch(p.epoch, p.batch)
                if pin:
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                self.train_step(x, y, self.lr_at(p.step, self.fraction_done()))
                p.step += 1
                p.chars += x.numel()
                window_chars += x.numel()
                p.batch += 1
                if p.batch >= self.batcher.batches_per_epoch(p.epoch):
                    p.epoch, p.batch = p.epoch + 1, 0
                now = time.perf_counter()
                p.elapsed += now - t_last
                t_last = now
                loss_sum += self.loss
                loss_n += 1
                for hook in self.hooks.on_step:
                    hook(self)
                frac = self.fraction_done()
                if p.step % c.log_interval == 0 or self._done():
                    loss = (loss_sum / loss_n).item()  # the only host sync, at logging points
                    rate = window_chars / max(now - window_t0, 1e-9)
                    record = {"step": p.step, "epoch": p.epoch, "loss": loss, "bpc": loss / math.log(2),
                              "lr": self.lr_at(p.step - 1, frac), "chars_per_s": rate, "elapsed": p.elapsed}
                    for hook in self.hooks.on_log:
                        hook(self, record)
                    bar.n = int(frac * 1000)
                    bar.set_postfix_str(f"step {p.step} loss {loss:.3f} bpc {loss / math.log(2):.3f} "
                                        f"{rate / 1000:.1f}k chars/s", refresh=True)
                    loss_sum, loss_n = torch.zeros((), device=self.device), 0
                    window_t0, window_chars = time.perf_counter(), 0
                if self.evaluate is not None and (self._eval_due(frac) or self._done()):
                    self._validate(bar)
                    t_last = time.perf_counter()  # evaluation time is counted by _validate
                    window_t0, window_chars = t_last, 0
        finally:
            self._restore_sigint(previous)
            bar.close()
        for hook in self.hooks.on_save:
            hook(self)
        return reason

    def _validate(self, bar) -> None:
        t0 = time.perf_counter()
        result = self.evaluate(self.model)
        self.progress.evals += 1
        is_best = result.loss_nats < self.progress.best_val
        if is_best:
            self.progress.best_val = result.loss_nats
        self.progress.elapsed += time.perf_counter() - t0
        self.model.train()
        for hook in self.hooks.on_eval:
            hook(self, result, is_best)

    # Ctrl-C: the first one finishes the step and saves; a second one stops at once.
    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            tqdm.write("interrupted: finishing this step and saving last.pt (Ctrl-C again to abort)", file=sys.stderr)

        return signal.signal(signal.SIGINT, handler)

    def _restore_sigint(self, previous) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
