"""What a trained model's units and gradients do on a text: the measurements behind `charrnn inspect`.

* cells: every unit's activation on each character (an RNN's h and tanh(c), a Transformer's residual
  stream), correlated with simple features of the text, so the units that track something are found
  automatically (Karpathy 2015, "The Unreasonable Effectiveness of Recurrent Neural Networks");
* surprise: the loss on each character and the model's top five guesses for it;
* gates: how often each LSTM/GRU gate unit is left- or right-saturated (below 0.1, above 0.9), the
  scatter of Karpathy, Johnson and Fei-Fei (2015, "Visualizing and Understanding Recurrent Networks");
* gradients through time: the norm of the gradient of the loss at step t with respect to the state
  at t - k, for k = 1..256, averaged over positions: the vanishing gradient as a curve, measured the
  same way on the same positions for the model's configuration untrained (`untrained`), so the curve
  has a reference beside it.

Everything is accumulated chunk by chunk (`model.iter_trace`), so the text may be long; only the
stretch the page shows keeps every activation.
"""

from __future__ import annotations

import base64
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .families import build_model
from .models import token_losses

PROGRESS_FROM = 20_000  # characters: longer texts get a progress bar
SATURATED = (0.1, 0.9)  # a gate below the first is left-saturated, above the second right-saturated
TOP_K = 5  # guesses shown when hovering over a character
GTT_K = 256  # gradients through time: k = 1..GTT_K characters back
GTT_WARM = 64  # characters read before each window, so the state there is not the zero state
GTT_BATCH = 16  # windows per backward pass (memory grows with it and with GTT_K)
GTT_AT = 50  # characters back at which the page and the command compare gradients
# Below this |r| a unit is said not to track a feature: its activation accounts for under a tenth of the
# feature's variance (r^2 < 0.09). A line drawn and stated on the page, not a test of significance.
WEAK_R = 0.3


# --- text features --------------------------------------------------------------------------------
OPENERS, CLOSERS = "([{", ")]}"
FEATURES = {
    "inside double quotes": "after an opening \" and before its closing one",
    "inside single quotes": "after an opening ' on the same line (one right after a letter or digit opens nothing)",
    "bracket depth": "how many ( [ { are open",
    "inside brackets": "at least one ( [ { is open",
    "position in the line": "characters since the last line break",
    "indentation": "leading spaces and tabs read so far on this line",
    "after # on the line": "a comment in Python or shell code",
    "start of a word": "a letter after a character that is not a letter or digit",
    "position in the word": "letters since the word began (0 outside words)",
}


def text_features(pieces: list[str]) -> np.ndarray:
    """(N, len(FEATURES)) float32: each feature's value after reading each character. Every feature
    reads only the text up to that character, as the model does."""
    out = np.zeros((len(pieces), len(FEATURES)), dtype=np.float32)
    dq = sq = comment = False
    depth = col = indent = word = 0
    in_indent = True
    prev = "\n"
    for t, piece in enumerate(pieces):
        ch = piece[:1]
        if ch == "\n":
            sq = comment = False
            col = indent = 0
            in_indent = True
        else:
            col += 1
            if in_indent and ch in (" ", "\t"):
                indent += 1
            else:
                in_indent = False
        if ch == '"':
            dq = not dq
        elif ch == "'" and (sq or not prev.isalnum()):  # closes, or opens unless it follows a letter (it's)
            sq = not sq
        elif ch == "#":
            comment = True
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth = max(depth - 1, 0)
        start = ch.isalpha() and not prev.isalnum()
        word = word + 1 if ch.isalpha() and word else (1 if start else 0)
        out[t] = (dq, sq, depth, depth > 0, col, indent, comment, start, word)
        prev = ch or prev
    return out


# --- the measurements -------------------------------------------------------------------------------
class _Pearson:
    """Streaming correlation of every unit (columns of A) with every feature (columns of F)."""

    def __init__(self, units: int, features: int):
        self.n = 0
        self.sa, self.saa = np.zeros(units), np.zeros(units)
        self.sf, self.sff = np.zeros(features), np.zeros(features)
        self.saf = np.zeros((units, features))

    def add(self, a: np.ndarray, f: np.ndarray) -> None:
        a, f = a.astype(np.float64), f.astype(np.float64)
        self.n += len(a)
        self.sa += a.sum(0)
        self.saa += (a * a).sum(0)
        self.sf += f.sum(0)
        self.sff += (f * f).sum(0)
        self.saf += a.T @ f

    def r(self) -> np.ndarray:
        """(units, features); NaN where a unit or a feature never changes."""
        n = self.n
        cov = n * self.saf - np.outer(self.sa, self.sf)
        var = np.outer(n * self.saa - self.sa ** 2, n * self.sff - self.sf ** 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(np.where(var > 1e-9 * n * n, var, np.nan))
        return np.clip(r, -1, 1)


@dataclass
class UnitKind:
    """One kind of unit ("hidden", "cell", "residual") over the stretch the page shows."""

    name: str
    layers: int
    width: int
    bounded: bool  # values in [-1, 1] (h, tanh c); otherwise each unit is scaled by its largest |value|
    scale: list[float]  # per unit (layers * width), what 127 stands for
    shown: np.ndarray  # (layers, width, show) int8
    r: np.ndarray  # (layers * width, features) correlation with each feature over the whole text


@dataclass
class Inspection:
    chars: int  # characters analysed
    loss_nats: float  # mean loss over them (each predicted from all the text before it)
    pieces: list[str]  # the text shown, one entry per character
    surprise: list[float | None]  # loss on each shown character (None: the first has no prediction)
    guesses: list[list[tuple[str, float]]]  # top TOP_K predictions for each shown character
    units: list[UnitKind]
    saturation: dict[str, np.ndarray]  # gate -> (layers, hidden, 2): left- and right-saturated fraction
    gradients: list[float | None]  # mean gradient norm at k = 1..len, None beyond the model's reach
    gradient_positions: int
    best: list[dict] = field(default_factory=list)  # each feature's best unit, strongest first ("weak": |r| < WEAK_R)
    # the same measurement of the model's configuration untrained (`untrained`), or None: not measured
    untrained_gradients: list[float | None] | None = None
    untrained_seed: int | None = None

    def gradient_ratio(self, k: int = GTT_AT, untrained: bool = False) -> float | None:
        """The gradient k characters back over the one 1 character back (of the untrained model's curve)."""
        g = (self.untrained_gradients or []) if untrained else self.gradients
        if len(g) < k or g[0] is None or g[k - 1] is None or g[0] == 0:
            return None
        return g[k - 1] / g[0]

    def versus_untrained(self, k: int = GTT_AT) -> dict | None:
        """The trained model's gradient over the untrained one's, k characters back, or at the furthest k
        below it that both curves reach (a Transformer's context may be shorter); None if none."""
        for j in range(min(k, len(self.gradients), len(self.untrained_gradients or [])), 0, -1):
            a, b = self.gradients[j - 1], self.untrained_gradients[j - 1]
            if a is not None and b is not None and a > 0 and b > 0:
                return {"k": j, "trained": a, "untrained": b, "ratio": a / b}
        return None

    def summary(self) -> dict:
        return {"chars": self.chars, "loss_nats": self.loss_nats, "best_units": self.best, "weak_r": WEAK_R,
                "gradient_ratio_50": self.gradient_ratio(GTT_AT), "gradients": self.gradients,
                "gradient_positions": self.gradient_positions, "untrained_gradients": self.untrained_gradients,
                "untrained_seed": self.untrained_seed,
                "untrained_gradient_ratio_50": self.gradient_ratio(GTT_AT, untrained=True),
                "trained_over_untrained": self.versus_untrained(GTT_AT),
                "saturation": {g: {"left_mean": float(s[..., 0].mean()), "right_mean": float(s[..., 1].mean())}
                               for g, s in self.saturation.items()}}


def gradients_through_time(model, ids: np.ndarray, device: torch.device, k_max: int = GTT_K, positions: int = 32,
                           seed: int = 0) -> tuple[list[float | None], int]:
    """Mean over `positions` seeded positions t of |d loss_t / d state_{t-k}| for k = 1..k_max
    (shorter when the text is), and how many positions were used. None where the model cannot
    reach back k characters (beyond a Transformer's context)."""
    n = len(ids)
    k_max = min(k_max, n - 2)
    if k_max < 1:
        return [], 0
    warm = min(GTT_WARM, n - 2 - k_max)
    width = warm + k_max + 2  # each row: warm-up, k_max + 1 differentiated inputs, the target
    rng = np.random.default_rng(seed)
    ends = np.sort(rng.choice(np.arange(width, n + 1), size=min(positions, n + 1 - width), replace=False))
    was_training = model.training
    model.eval()
    norms = []
    try:
        for i in range(0, len(ends), GTT_BATCH):
            rows = np.stack([np.asarray(ids[e - width:e], dtype=np.int64) for e in ends[i:i + GTT_BATCH]])
            norms.append(model.grad_through_time(torch.from_numpy(rows).to(device), k_max).float().cpu())
    finally:
        model.train(was_training)
    g = torch.cat(norms).numpy()
    seen = ~np.isnan(g).all(0)
    mean = np.full(k_max, np.nan)
    mean[seen] = np.nanmean(g[:, seen], 0)
    return [float(v) if math.isfinite(v) else None for v in mean], len(ends)


def untrained(model, seed: int, device: torch.device) -> torch.nn.Module:
    """A model of `model`'s configuration as its family builds it after torch.manual_seed(seed), as
    training does, never trained: the reference its gradients through time are drawn against. The
    global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model.config).to(device).eval()


@torch.no_grad()
def inspect_model(model, tok, ids: np.ndarray, device: torch.device, show: int = 1000, positions: int = 32,
                  seed: int = 0, quiet: bool = False, untrained_seed: int | None = None) -> Inspection:
    """Run every measurement of this module over `ids` (1-D token ids) with `model` on `device`.
    `untrained_seed`: also measure the gradients through time of the model's configuration untrained,
    built from that seed, on the same positions (when the model gives any gradient at all)."""
    n = len(ids)
    if n < 2:
        raise ValueError("need at least two characters to inspect")
    show = min(show, n)
    pieces = [tok.id_to_char(int(i)) for i in np.asarray(ids)]
    feats = text_features(pieces)
    was_training = model.training
    model.eval()
    ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
    pearson: dict[str, _Pearson] = {}
    shown: dict[str, list[np.ndarray]] = {}
    sat: dict[str, np.ndarray] = {}
    loss_sum, surprise, guesses = 0.0, [None], []
    bar = tqdm(total=n, unit="char", desc="inspect", disable=quiet or n <= PROGRESS_FROM, file=sys.stderr)
    try:
        for tr in model.iter_trace(ids_t):
            T, s = tr.logits.size(0), tr.start
            logits = tr.logits.float()
            # entry t predicts character s + t + 1
            targets = ids_t[s + 1:s + T + 1]
            ce = token_losses(logits[:len(targets)], targets)
            loss_sum += ce.sum().item()
            if s < show:
                m = min(T, show - s)
                surprise += ce[:m].tolist()
                probs, top = logits[:m].softmax(-1).topk(min(TOP_K, logits.size(-1)), -1)
                guesses += [[(tok.id_to_char(int(i)), round(float(p), 4)) for i, p in zip(ti, pi)]
                            for ti, pi in zip(top.tolist(), probs.tolist())]
            for name, a in tr.units.items():  # (T, L, W)
                flat = a.float().reshape(T, -1).cpu().numpy()
                pearson.setdefault(name, _Pearson(flat.shape[1], feats.shape[1])).add(flat, feats[s:s + T])
                if s < show:
                    shown.setdefault(name, []).append(a[:show - s].float().cpu().numpy())
            for name, g in tr.gates.items():  # (T, L, H) in [0, 1]
                counts = torch.stack([(g < SATURATED[0]).sum(0), (g > SATURATED[1]).sum(0)], -1)
                sat[name] = sat.get(name, 0) + counts.cpu().numpy()
            bar.update(T)
    finally:
        bar.close()
        model.train(was_training)
    gradients, used = gradients_through_time(model, ids, device, positions=positions, seed=seed)
    reference = None
    if untrained_seed is not None and any(v is not None for v in gradients):  # the same rows and k
        reference = gradients_through_time(untrained(model, untrained_seed, device), ids, device,
                                           positions=positions, seed=seed)[0]
    units = [_unit_kind(name, np.concatenate(shown[name])[:show], pearson[name].r()) for name in pearson]
    return Inspection(chars=n, loss_nats=loss_sum / (n - 1), pieces=pieces[:show], surprise=surprise[:show],
                      guesses=[[]] + guesses[:show - 1], units=units,
                      saturation={k: v / n for k, v in sat.items()}, gradients=gradients, gradient_positions=used,
                      best=best_units(units), untrained_gradients=reference,
                      untrained_seed=None if reference is None else untrained_seed)


def _unit_kind(name: str, acts: np.ndarray, r: np.ndarray) -> UnitKind:
    # acts: (show, L, W) -> int8 (L, W, show), each unit's series contiguous for the page's script
    show, L, W = acts.shape
    bounded = name in ("hidden", "cell")
    series = acts.transpose(1, 2, 0).reshape(L * W, show)
    scale = np.ones(L * W) if bounded else np.maximum(np.abs(series).max(1), 1e-6)
    q = np.clip(np.rint(series / scale[:, None] * 127), -127, 127).astype(np.int8).reshape(L, W, show)
    return UnitKind(name, L, W, bounded, [float(v) for v in scale], q, r)


def best_units(units: list[UnitKind]) -> list[dict]:
    """For each feature the unit that tracks it best, strongest first; "weak" where even that one's |r| is
    below WEAK_R (no unit tracks the feature). A feature that never changes in the text has none."""
    names = list(FEATURES)
    found = []
    for j, feature in enumerate(names):
        best = None
        for kind in units:
            col = np.nan_to_num(np.abs(kind.r[:, j]), nan=-1.0)
            u = int(col.argmax())
            if col[u] >= 0 and (best is None or col[u] > abs(best["r"])):
                best = {"feature": feature, "kind": kind.name, "layer": u // kind.width, "unit": u % kind.width,
                        "r": float(kind.r[u, j])}
        if best is not None:
            found.append({**best, "weak": abs(best["r"]) < WEAK_R})
    return sorted(found, key=lambda b: -abs(b["r"]))


def encode_int8(a: np.ndarray) -> str:
    """An int8 array as base64, the form the page's script decodes."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.int8).tobytes()).decode("ascii")
