"""A truncated-BPTT trainer that knows nothing about the model it trains beyond the shared contract
`model(x, state, targets) -> (logits, loss, state)`.

The batcher decides what a batch is: `batch(epoch, k) -> (x, y)` and `batches_per_epoch(epoch)`.
Whatever state the model returns is carried (detached) into the next batch and reset at each
epoch, so a stateful RNN reads its streams continuously and a stateless model simply returns None.
AdamW, gradient-norm clipping, linear warmup then cosine decay over the run's progress, which is
measured in steps, epochs or elapsed time, whichever stop comes first, so a `max_time` run ends
with the rate fully decayed. Mixed precision through autocast (bf16 on CPU/CUDA, fp16 with a
GradScaler on CUDA). Everything needed to continue exactly is in `state_dict()`, the steps since
the last metrics record included, so a resumed run logs what an unbroken one does.

The trainer is the loop: it tells the code around it what happens through `Hooks` (minGPT's
callbacks): each step, each metrics record, each validation, and the stop. What a run folder keeps
(metrics, checkpoints, the best one: checkpoint.RunRecorder), the progress bar (progress.py) and the
notices are hooks. Validation: the loop decides when, and calls `evaluate(model, subset=True)`, the
evaluator's fixed part of the split (all of it when that is small); the hooks hear whether it was the
run's last pass (`final`), after which the whole split is scored.

A step whose loss or gradient is not finite changes nothing (the update is skipped, counted, and
logged); `diverge_after` of them in a row end the run with `TrainingDiverged`. The fused AdamW (CPU
and CUDA) skips on the device itself, so a step still never waits for a GPU. Under fp16 the gradient
scaler skips a step whose scaled gradients overflowed while the loss was finite: that is how it finds
its scale (several times early in a run), so such steps are counted apart (`scaler_skipped`) and never
toward the divergence stop; a non-finite loss still is, and so is a scale that falls below
`MIN_LOSS_SCALE` (the gradients then overflow even unscaled).

Data parallel (`world`, see distributed.py): the model trains wrapped in DDP, the batcher yields
this rank's rows of the global batch, and the ranks agree on the clock and on stopping after every
step. `grad_accum` splits a rank's rows into that many micro-batches of consecutive rows, each
carrying its own streams' state. The carried state holds the streams on dim 1, as (layers, B,
hidden) in nn.LSTM; a model laid out otherwise says so with a `state_batch_dim` attribute.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .device import MIN_LOSS_SCALE, autocast, fused_adamw, grad_scaler
from .distributed import World
from .errors import CharrnnError, TrainingDiverged, one_line
from .models import finite_weights
from .signals import stop_on_signals
from .units import MAX_SECONDS, MAX_SEED

IGNORE = -100  # a target the loss leaves out: F.cross_entropy's default ignore_index


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The gradients' total 2-norm, without clipping them."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, math.inf)


@dataclass
class TrainConfig:
    batch_size: int = 32  # streams in the global batch, over all ranks and micro-batches
    seq_len: int = 128
    grad_accum: int = 1  # micro-batches per optimizer step (gradients accumulated)
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
    eval_interval: int = 0  # steps between validation passes; 0 = auto (see `_eval_due`)
    eval_share: float = 0.05  # auto with a time budget: at most about this share of it spent validating
    log_interval: int = 10  # steps between metric records and progress-bar updates
    seed: int = 1337
    diverge_after: int = 25  # this many skipped updates in a row (non-finite loss or gradient) stop the run

    def to_dict(self) -> dict:
        return asdict(self)

    def problems(self) -> list[str]:
        """What is wrong with these settings (nothing: an empty list). A NaN passes every comparison, and
        inf most of them, so any setting that is not a finite number is named first."""
        found = [f"{flag(k)} must be a finite number, not {v}" for k, v in self.to_dict().items()
                 if isinstance(v, float) and not math.isfinite(v)]
        checks = [
            (self.batch_size >= 1, f"batch-size must be >= 1, not {self.batch_size}"),
            (self.seq_len >= 1, f"seq-len must be >= 1, not {self.seq_len}"),
            (self.grad_accum >= 1, f"grad-accum must be >= 1, not {self.grad_accum}"),
            # beyond MAX_RATE AdamW's step sizes overflow float32 before the run can even diverge
            (0 < self.lr <= MAX_RATE, f"lr must be > 0 and at most {MAX_RATE:g}, not {self.lr}"),
            (0 <= self.weight_decay <= MAX_RATE, f"weight-decay must be in [0, {MAX_RATE:g}], not {self.weight_decay}"),
            (self.grad_clip >= 0, f"grad-clip must be >= 0, not {self.grad_clip}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], not {self.min_lr_ratio}"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "AdamW's betas must be in [0, 1)"),
            (self.warmup_steps >= 0, f"warmup must be >= 0, not {self.warmup_steps}"),
            (self.eval_interval >= 0, f"eval-interval must be >= 0, not {self.eval_interval}"),
            (self.log_interval >= 1 and self.diverge_after >= 1, "log_interval and diverge_after must be >= 1"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, 2**63 - 1], not {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1, "max-steps must be >= 1"),
            (self.max_epochs is None or self.max_epochs > 0, "max-epochs must be > 0"),
            (self.max_time is None or 0 < self.max_time <= MAX_SECONDS, "max-time must be > 0 and at most a year"),
        ]
        return found or [message for ok, message in checks if not ok]


MAX_RATE = 1e6  # the largest --lr and --weight-decay
FLAGS = {"n_layers": "--layers", "warmup_steps": "--warmup", "model": "--model"}


def flag(key: str) -> str:
    """The command-line option that sets a config field."""
    return FLAGS.get(key, "--" + key.replace("_", "-"))


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # position of the next batch: epoch and batch index within it
    batch: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    chars: int = 0  # characters trained on, all ranks together
    best_val: float = math.inf  # the best checkpoint's validation loss, as its pass scored it (maybe a subset)
    best_step: int = -1  # the step of the best checkpoint (-1: none yet)
    best_full: float = math.inf  # its loss over the whole split, once a full pass scored it (inf: not yet)
    evals: int = 0  # validation passes done
    eval_frac: float = 0.0  # run fraction at the last validation
    eval_s: float = 0.0  # seconds the last validation took
    eval_step: int = -1  # the step of the last validation
    skipped: int = 0  # updates skipped because the loss or the gradient was not finite
    scaler_skipped: int = 0  # fp16: updates the gradient scaler skipped while it lowered its scale


class _Window:
    """The steps since the last metrics record, kept on the device (reading them syncs it): the sum and
    count of their finite losses, the updates skipped for a non-finite loss or gradient, the longest
    run of those, and the updates the fp16 scaler skipped."""

    def __init__(self, device: torch.device):
        z = torch.zeros((), device=device)
        self.loss, self.finite, self.skipped, self.worst = z.clone(), z.clone(), z.clone(), z.clone()
        self.scaler = z.clone()
        self.streak = z.clone()  # skipped updates in a row up to now; it runs on across records
        self.steps = 0  # steps in the window (counted on the host: no sync)

    def add(self, loss: torch.Tensor, bad: torch.Tensor, scaler_skip: torch.Tensor | None = None) -> None:
        finite = torch.isfinite(loss)
        self.steps += 1
        self.loss += torch.where(finite, loss, 0.0)
        self.finite += finite
        self.skipped += bad
        self.streak = (self.streak + 1) * bad
        torch.maximum(self.worst, self.streak, out=self.worst)
        if scaler_skip is not None:
            self.scaler += scaler_skip

    def record(self, world: World, p: Progress, diverge_after: int) -> dict:
        """The metrics record's figures for the steps since the last one, summed over the ranks (the only
        host sync, at logging points), counted into `p`; TrainingDiverged if the updates have been
        skipped `diverge_after` times in a row."""
        loss_sum, finite, skipped, worst, scaler = self.read()
        loss_sum, finite, skipped, scaler = world.all_sum([loss_sum, finite, skipped, scaler])
        skipped, scaler = int(skipped / world.world_size), int(scaler / world.world_size)  # every rank skips alike
        p.skipped += skipped
        p.scaler_skipped += scaler
        if worst >= diverge_after:
            raise TrainingDiverged(f"training diverged: {worst} updates in a row, up to step {p.step}, had a "
                                   f"non-finite loss or gradient")
        loss = loss_sum / finite if finite else None
        return {"loss": loss, "bpc": None if loss is None else loss / math.log(2), "skipped": skipped,
                "scaler_skipped": scaler}

    def read(self) -> tuple[float, float, int, int, int]:
        """(loss sum, finite count, skipped, longest streak, scaler skips), and a fresh window (the streak
        goes on)."""
        values = torch.stack([self.loss, self.finite, self.skipped, self.worst, self.scaler]).tolist()
        for t in (self.loss, self.finite, self.skipped, self.scaler):
            t.zero_()
        self.steps = 0
        self.worst.copy_(self.streak)
        loss, finite, skipped, worst, scaler = values
        return loss, finite, int(skipped), int(worst), int(scaler)

    def state_dict(self) -> dict:
        return {"loss": self.loss.detach().cpu().clone(), "finite": int(self.finite.item()),
                "skipped": int(self.skipped.item()), "worst": int(self.worst.item()), "streak": int(self.streak.item()),
                "scaler": int(self.scaler.item()), "steps": self.steps}

    @staticmethod
    def mean(windows: list[dict]) -> dict:
        if len(windows) == 1:
            return windows[0]
        return {**windows[0], "loss": sum(w["loss"] for w in windows) / len(windows),
                "finite": sum(w["finite"] for w in windows) / len(windows)}

    def load_state_dict(self, sd: dict) -> None:
        self.loss.copy_(sd["loss"])
        for name in ("finite", "skipped", "worst", "streak"):
            getattr(self, name).fill_(sd[name])
        self.scaler.fill_(sd.get("scaler", 0))  # (absent in checkpoints from before it was counted)
        self.steps = int(sd.get("steps", 0))  # (likewise: such a window is logged at the next record)


def split_state(state, n: int, dim: int) -> list:
    """A carried state (a tuple of tensors, the streams on `dim`) -> one state per micro-batch."""
    if state is None or n == 1:
        return [state] * n
    return list(zip(*(tuple(p.contiguous() for p in s.chunk(n, dim)) for s in state)))


def join_state(states: list, dim: int):
    """The micro-batches' states -> one, cut from their graphs (the next chunk's starting point)."""
    if states[0] is None:
        return None
    if len(states) == 1:
        return tuple(s.detach() for s in states[0])
    return tuple(torch.cat(parts, dim).detach() for parts in zip(*states))


@dataclass
class Hooks:
    """What the code around the loop hears, each hook with the trainer first."""

    on_step: list[Callable] = field(default_factory=list)  # (trainer): after each optimizer step
    on_log: list[Callable] = field(default_factory=list)  # (trainer, record): each metrics record
    on_eval: list[Callable] = field(default_factory=list)  # (trainer, result, final): each validation
    on_stop: list[Callable] = field(default_factory=list)  # (trainer, reason): the loop ended, "done" or "interrupted"


class Trainer:
    def __init__(self, model, config: TrainConfig, batcher, device: torch.device, precision: str,
                 evaluate: Callable | None = None, world: World | None = None, compile: bool = False,
                 outputs: int | None = None):
        if config.max_steps is None and config.max_epochs is None and config.max_time is None:
            raise ValueError("set at least one of max_steps, max_epochs, max_time")
        self.world = world or World()
        self.model = model.to(device)
        self.ddp = self.world.wrap(self.model, device)  # the model, or DDP around it (averages gradients)
        # What the training step calls. torch.compile wraps the module but shares its parameters, so
        # `self.model` (saved, evaluated, sampled) stays the plain module with plain state_dict keys.
        self.net = torch.compile(self.ddp) if compile else self.ddp
        self.config = config
        self.batcher = batcher
        # Targets from `outputs` on are byte tokens, which the model reads but never predicts (a character
        # the vocabulary left out): the loss leaves them out (cross_entropy's ignore_index).
        self.outputs = outputs
        self.device = device
        self.precision = precision
        self.evaluate = evaluate
        self.hooks = Hooks()
        self.say: Callable[[str], None] = lambda message: print(message, file=sys.stderr)  # notices to the user
        # Seconds the run still needs after the loop (its final pass, the last checkpoint): a time budget
        # stops the loop that much early, so that the whole run fits it.
        self.reserve: Callable[[], float] = lambda: 0.0
        self.progress = Progress()
        self.state = None  # carried hidden state
        self.loss = None  # last step's loss (a tensor: reading it syncs the device)
        self._fused = fused_adamw(device)
        self.optimizer = self._make_optimizer()
        self.scaler = grad_scaler(device, precision)
        self.window = _Window(device)
        self._stop_requested = False  # asked for on this rank (Ctrl-C, request_stop)
        self._stop_agreed = False  # decided by all ranks together; what the loop obeys
        torch.manual_seed(config.seed + self.world.rank)  # each rank draws its own dropout masks

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for all parameters, which can also skip a step on the device's own flag
        return torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=self._fused)

    # --- schedule -----------------------------------------------------------------------------
    def _stops(self) -> list[float]:
        """How far the run is towards each configured stop (1 and beyond: reached)."""
        c, p = self.config, self.progress
        fracs = []
        if c.max_steps is not None:
            fracs.append(p.step / max(c.max_steps, 1))
        if c.max_epochs is not None:
            fracs.append((p.epoch + p.batch / self.batcher.batches_per_epoch(p.epoch)) / c.max_epochs)
        if c.max_time is not None:
            fracs.append((p.elapsed + self.reserve()) / c.max_time)
        return fracs

    def fraction_done(self) -> float:
        """How far through the run we are, in [0, 1]: the furthest of the configured stops."""
        return min(max(self._stops()), 1.0)

    def lr_at(self, step: int, frac: float) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        floor = c.lr * c.min_lr_ratio
        return floor + 0.5 * (c.lr - floor) * (1 + math.cos(math.pi * min(frac, 1.0)))

    def _eval_due(self, frac: float) -> bool:
        """Auto: 10 evenly spaced validations for step/epoch budgets. With a time budget, where each pass
        spends the budget, one a minute (2 to 20 in all), spaced further apart once a pass is seen to cost
        more than `eval_share` of the run."""
        c, p = self.config, self.progress
        if c.eval_interval > 0:
            return p.step % c.eval_interval == 0
        if c.max_time is None:
            return frac >= (p.evals + 1) / 10
        gap = 1 / max(2, min(20, round(c.max_time / 60)))
        if p.evals:
            gap = max(gap, p.eval_s / (c.eval_share * c.max_time))
        return frac >= p.eval_frac + gap

    # --- checkpointable state -----------------------------------------------------------------
    @property
    def _state_dim(self) -> int:
        return getattr(self.model, "state_batch_dim", 1)

    def state_dict(self) -> dict:
        """Everything an exact resume needs. Under DDP every rank must call it, since it gathers: the
        carried state is the global one (all ranks' streams in batch order), and `rank_rng` holds
        each rank's RNG state."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        carry = None if self.state is None else self.world.gather_rows(self.state, self._state_dim)
        sd = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "rng": rng,
            "carry": None if carry is None else [s.detach().cpu() for s in carry],
            "world_size": self.world.world_size,
            "window": self.window.state_dict(),
        }
        if self.world.launched:
            sd["rank_rng"] = self.world.gather(rng)
            sd["rank_window"] = self.world.gather(sd["window"])
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.optimizer.load_state_dict(sd["optimizer"])
        if sd["scaler"]:
            self.scaler.load_state_dict(sd["scaler"])
        self.progress = Progress(**sd["progress"])
        same_world = sd.get("world_size", 1) == self.world.world_size
        windows = sd.get("rank_window") or ([sd["window"]] if "window" in sd else [])
        if windows:  # (checkpoints from before windows were saved start a fresh one)
            # Another number of ranks: each takes the mean of the saved ranks' windows, so the next
            # record still averages the global batch's losses over the same steps.
            self.window.load_state_dict(windows[self.world.rank] if same_world and len(windows) > 1
                                        else _Window.mean(windows))
        if same_world:
            rng = sd["rank_rng"][self.world.rank] if "rank_rng" in sd else sd["rng"]
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        else:
            # Another number of ranks: the data layout carries over exactly, dropout streams cannot.
            # Seed new ones from (seed, step, rank), so the resumed run is still reproducible.
            torch.manual_seed((self.config.seed * 1_000_003 + self.progress.step) * 4_099 + self.world.rank)
        carry = sd["carry"]
        if carry is not None:  # this rank's rows of the global state
            rows = self.world.rows(self.config.batch_size)
            carry = tuple(s.narrow(self._state_dim, rows.start, len(rows)).contiguous() for s in carry)
        self.state = None if carry is None else tuple(s.to(self.device) for s in carry)

    # --- the loop -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save, and return (what Ctrl-C does)."""
        self._stop_requested = True

    def _done(self) -> bool:
        return max(self._stops()) >= 1.0

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """One optimizer step over this rank's rows, in `grad_accum` micro-batches of consecutive rows.

        Each micro-batch's loss is divided by their number, so the summed gradients are those of one
        pass over all the rows; DDP then averages them over the ranks, all-reducing only after the
        last micro-batch. B streams give the same gradients however they are split.

        If the gradients' norm is not finite (a NaN or infinite loss makes it so) the update is skipped,
        and the window of the next metrics record counts it.
        """
        opt = self.optimizer
        for group in opt.param_groups:
            group["lr"] = lr
        n = self.config.grad_accum
        if x.size(0) % n:  # uneven chunks would scale the loss wrongly (and skip DDP's all-reduce)
            raise ValueError(f"a batch of {x.size(0)} rows does not split into {n} micro-batches")
        states, carried, total = split_state(self.state, n, self._state_dim), [], 0.0
        for i, (xi, yi) in enumerate(zip(x.chunk(n), y.chunk(n))):
            with self.world.no_sync(self.ddp) if i < n - 1 else contextlib.nullcontext():
                with autocast(self.device, self.precision):
                    _, loss, state = self.net(xi, states[i], yi)
                self.scaler.scale(loss / n).backward()
            carried.append(state)
            total = total + loss.detach()
        self.scaler.unscale_(opt)  # (a no-op unless fp16 scales the loss)
        params = self._params
        if self.config.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            norm = _grad_norm(params)
        # The gradients are all-reduced, so every rank reaches the same verdict.
        bad, scaler_skip = ~torch.isfinite(norm), None
        if self.scaler.is_enabled():  # fp16: the scaler skips a step whose gradients overflowed
            # With a finite loss that is the scaler lowering its scale, not a step gone wrong.
            scaler_skip = bad & torch.isfinite(total)
            bad = bad & ~scaler_skip
            self.scaler.step(opt)
        elif self._fused:  # the fused kernel reads the flag on the device: no host sync
            opt.found_inf, opt.grad_scale = bad.float(), None
            opt.step()
        elif not bad.item():  # (no fused kernel here, e.g. MPS): read the flag on the host
            opt.step()
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        self.window.add(total / n, bad, scaler_skip)
        # carry the state into the next chunk, cut from this chunk's graph
        self.state = join_state(carried, self._state_dim)
        self.loss = total / n

    @property
    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.grad is not None]

    def weights_finite(self) -> bool:
        """Whether every weight is a finite number (a checkpoint is only ever written if so)."""
        return finite_weights(self.model)

    def run(self) -> str:
        """Train until a stop; returns why it stopped: 'done' or 'interrupted'."""
        self.model.train()
        reason = "done"
        try:
            with stop_on_signals(self.world, self._ask_stop, self.say):
                reason = self._loop()
        except torch._dynamo.exc.BackendCompilerFailed as e:  # e.g. no C++ compiler for inductor on this machine
            inner = e.inner_exception
            raise CharrnnError(f"--compile failed ({type(inner).__name__}: {one_line(inner, 200)}); "
                               f"train without --compile") from None
        for hook in self.hooks.on_stop:
            hook(self, reason)
        return reason

    def _loop(self) -> str:
        c, p = self.config, self.progress
        pin = self.device.type == "cuda"
        window_t0, window_chars = time.perf_counter(), 0  # for the rate, since the last record
        t_last = time.perf_counter()
        while not self._done() or p.step == 0:  # (a budget its setup spent still trains one step)
            if self._stop_agreed:
                return "interrupted"
            if p.batch == 0:
                self.state = None  # a new epoch's streams do not continue the last epoch's
            x, y = self.batcher.batch(p.epoch, p.batch)
            if self.outputs is not None:
                y = y.masked_fill(y >= self.outputs, IGNORE)
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            self.train_step(x, y, self.lr_at(p.step, self.fraction_done()))
            p.step += 1
            p.chars += x.numel() * self.world.world_size  # every rank trains on as many
            window_chars += x.numel() * self.world.world_size
            p.batch += 1
            if p.batch >= self.batcher.batches_per_epoch(p.epoch):
                p.epoch, p.batch = p.epoch + 1, 0
            now = time.perf_counter()
            p.elapsed += now - t_last
            t_last = now
            for hook in self.hooks.on_step:
                hook(self)
            self._agree()
            if p.step % c.log_interval == 0 or self._done():
                self._log(window_chars / max(now - window_t0, 1e-9))
                window_t0, window_chars = time.perf_counter(), 0
            if self.evaluate is not None and (self._eval_due(self.fraction_done()) or self._done()):
                t_eval = time.perf_counter()
                self._validate()
                t_last = time.perf_counter()  # the validation's time is counted by _validate
                window_t0 += t_last - t_eval  # and left out of the rate
        # steps not logged yet: a validation spent the budget before their record, or a resumed run
        # whose budget was spent holds the interrupted run's open window
        if self.window.steps:
            self._log(window_chars / max(t_last - window_t0, 1e-9))
        if self.evaluate is not None and p.eval_step != p.step:  # (a resumed run whose budget was spent)
            self._validate()  # every finished run ends with its final pass and best.pt
        return "done"

    def _ask_stop(self) -> bool:
        """Ask the loop to stop (a signal's handler); whether it had been asked already."""
        asked, self._stop_requested = self._stop_requested, True
        return asked

    def _log(self, rate: float) -> None:
        record = self._log_record(rate)
        for hook in self.hooks.on_log:
            hook(self, record)

    def _log_record(self, rate: float) -> dict:
        """The metrics record of the steps since the last one (`_Window.record`)."""
        p = self.progress
        counts = self.window.record(self.world, p, self.config.diverge_after)
        scaler = counts.pop("scaler_skipped")
        record = {"step": p.step, "epoch": p.epoch, **counts, "lr": self.lr_at(p.step - 1, self.fraction_done()),
                  "chars_per_s": rate, "elapsed": p.elapsed}
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            if scale < MIN_LOSS_SCALE:
                raise TrainingDiverged(f"training diverged: the fp16 gradient scale fell to {scale:g} by step {p.step}, "
                                       f"so the gradients overflow even unscaled")
            record |= {"scaler_skipped": scaler, "loss_scale": scale}
        if self.device.type == "cuda":  # a host-side counter: no sync
            record["gpu_peak_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return record

    def _validate(self) -> None:
        """Score the evaluator's part of the split; the hooks hear whether this was the last pass. The time
        it takes counts toward the budget, so a pass that spends the rest of it is the last one."""
        p = self.progress
        t0, before = time.perf_counter(), p.elapsed
        result = self.evaluate(self.model, subset=True)
        p.elapsed = before + time.perf_counter() - t0
        self._agree()  # from the agreed clock, so that every rank spaces its validations alike
        p.evals += 1
        p.eval_step = p.step
        p.eval_s = p.elapsed - before
        p.eval_frac = self.fraction_done()
        final = self._done()
        for hook in self.hooks.on_eval:
            hook(self, result, final)
        p.elapsed = before + time.perf_counter() - t0  # (what the hooks spent on it too)
        self._agree()
        self.model.train()

    def _agree(self) -> None:
        """All ranks take the same clock and the same stop decision (the identity on one process)."""
        p = self.progress
        p.elapsed, self._stop_agreed = self.world.agree(p.elapsed, self._stop_requested)
