"""Independent, hand-written PyTorch reference loops for PGD-AT and TRADES on the embedded MNIST sample.

The leaderboard trains its PGD-AT and TRADES anchors through lit_robust (``AdversarialTraining``,
``TRADES``, Lightning). This script re-implements both algorithms in plain PyTorch -- its own PGD, its
own training loop, its own evaluation, no lit_robust defense, attack, trainer or callback -- on the same
data split and budget, so the two sets of numbers can be read side by side. From lit_robust it takes only
the data (``MNISTSampleDataModule``: 3,600 train / 400 val / 1,000 test digits in [0, 1], the validation
digits unused) and the network class (``SmallCNN``, normalization mean 0.1307, std 0.3081 inside).

Budget (the leaderboard's):

* seed 0: ``torch.manual_seed(0)`` before building each network; epoch ``e`` visits the training digits in
  the order ``randperm(3600, generator=Generator().manual_seed(0 + e))``; batch 128 (last batch 16);
* 20 epochs of Adam, lr 1e-3; Linf threat model, eps = 0.3;
* PGD-AT (Madry et al., 2018): min_theta E max_{||d||_inf <= eps} CE(f(x + d), y), the inner max by PGD-20,
  step 0.025, uniform random start in the eps ball, projection onto the ball and [0, 1]; the model is in
  eval mode while attacking and the update uses the adversarial examples only;
* TRADES (Zhang et al., 2019), beta = 6: min_theta E [CE(f(x), y) + beta * KL(p(x) || p(x'))], with
  x' = argmax_{||x' - x||_inf <= eps} KL(p(x) || p(x')) by 20 sign steps of 0.025 from x + 0.001 N(0, I),
  KL(p || q) = sum_k p_k (log p_k - log q_k) summed over classes and divided by the batch size (the
  official code's ``KLDivLoss(size_average=False)(log_softmax(f(x')), softmax(f(x))) / batch_size``).

Evaluation: clean accuracy on all 1,000 test digits; on the seeded subset of N test digits
``randperm(1000, generator=Generator().manual_seed(0))[:N].sort().values`` (N = 500 by default, the
project's subset rule) the accuracy under this script's PGD-40 (step 0.01, uniform random start, eps 0.3)
and under the official AutoAttack, standard version, Linf 0.3 (``pyautoattack``; its log goes to
``autoattack_<algorithm>.log`` in the output folder).

Output: ``reference_loops.json`` (per algorithm: accuracies, training seconds, budget, torch version and
thread count) and ``reference_loops.md`` (a table, next to the leaderboard's numbers read from
``<results>/{pgd_at,trades}/report.json`` when they exist, else "n/a"). Each algorithm's result is cached
in the JSON together with its budget: a re-run skips algorithms already computed under the same budget
(``--force`` recomputes). ``--smoke`` is a seconds-long check of the whole pipeline: 1 epoch on the first
256 training digits, PGD-2 in training, evaluation on 32 digits with AutoAttack's APGD-CE at 5 iterations.

    python benchmarks/reference_loops.py                          # both algorithms, full budget (~1 h, CPU)
    python benchmarks/reference_loops.py --only trades            # one of them
    python benchmarks/reference_loops.py --force --n-eval 1000    # recompute, evaluate on every test digit
    python benchmarks/reference_loops.py --smoke --out /tmp/ref   # pipeline check, well under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results" / "mnist_sample"
DEFAULT_OUT = DEFAULT_RESULTS / "reference_loops"
ALGORITHMS = ("pgd_at", "trades")
JSON_NAME, MD_NAME = "reference_loops.json", "reference_loops.md"
LEADERBOARD_AA_KEY = "autoattack_linf_0.3"
EVAL_BATCH = 250


@dataclass(frozen=True)
class Budget:
    """Everything that fixes a result; a cached result is reused only under an equal budget."""

    seed: int = 0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    eps: float = 0.3
    n_train: int | None = None  # None: all 3,600 training digits
    train_steps: int = 20
    train_step_size: float = 0.025
    beta: float = 6.0
    n_eval: int = 500
    eval_steps: int = 40
    eval_step_size: float = 0.01
    autoattack_version: str = "standard"
    autoattack_attacks: tuple[str, ...] | None = None  # only for version "custom"
    autoattack_iters: int | None = None  # None: AutoAttack's own (100)
    device: str = "cpu"


SMOKE = {
    "epochs": 1,
    "n_train": 256,
    "train_steps": 2,
    "n_eval": 32,
    "autoattack_version": "custom",
    "autoattack_attacks": ("apgd-ce",),
    "autoattack_iters": 5,
}


# ---------------------------------------------------------------------------------------------- data / model


def load_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of the MNIST sample: float (N, 1, 28, 28) in [0, 1], int64."""
    from lit_robust.data import MNISTSampleDataModule

    dm = MNISTSampleDataModule(batch_size=128)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    x_train, y_train = dm.train_set.tensors
    x_test, y_test = dm.test_set.tensors
    return x_train, y_train, x_test, y_test


def build_network(seed: int, device: str) -> nn.Module:
    """``SmallCNN`` for MNIST, built right after ``torch.manual_seed(seed)`` (seeded initialization)."""
    from lit_robust.models import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, input_size=28, num_classes=10, mean=0.1307, std=0.3081).to(device)


def eval_subset(n_test: int, n: int) -> Tensor:
    """The project's seeded subset rule: ``randperm(n_test, Generator().manual_seed(0))[:n]``, sorted."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(0))[:n].sort().values


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------- attack


def pgd_linf(
    model: nn.Module,
    x: Tensor,
    x_start: Tensor,
    loss_of_logits: Callable[[Tensor], Tensor],
    eps: float,
    steps: int,
    step_size: float,
) -> Tensor:
    """Projected sign-gradient ascent of ``loss_of_logits(f(x'))`` over the Linf ball around ``x``.

    x'_0 = x_start;  x'_{t+1} = clip_[0,1](clip_[x-eps, x+eps](x'_t + step_size * sign(grad_x' L(f(x'_t))))).
    Gradients are taken with respect to the input only (no parameter gradient accumulates). Returns x'_steps,
    detached.
    """
    lower, upper = x - eps, x + eps
    x_adv = x_start.detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_of_logits(model(x_adv))
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, lower), upper).clamp(0.0, 1.0)
    return x_adv.detach()


def uniform_start(x: Tensor, eps: float) -> Tensor:
    """x + U(-eps, eps)^d, clipped to [0, 1] (Madry et al.'s random start)."""
    return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)


def kl_batchmean(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p || q) = (1/B) sum_i sum_k p_ik (log p_ik - log q_ik), with p = softmax(logits_p), q likewise."""
    return F.kl_div(F.log_softmax(logits_q, dim=1), F.softmax(logits_p, dim=1), reduction="batchmean")


# ------------------------------------------------------------------------------------------------- training


def pgd_at_loss(model: nn.Module, x: Tensor, y: Tensor, budget: Budget) -> Tensor:
    """Madry's PGD-AT loss CE(f(x_adv), y), x_adv = PGD-k(CE) from a uniform start (attack in eval mode)."""
    with eval_mode(model):
        x_adv = pgd_linf(
            model,
            x,
            uniform_start(x, budget.eps),
            lambda logits: F.cross_entropy(logits, y),
            budget.eps,
            budget.train_steps,
            budget.train_step_size,
        )
    return F.cross_entropy(model(x_adv), y)


def trades_loss(model: nn.Module, x: Tensor, y: Tensor, budget: Budget) -> Tensor:
    """TRADES: CE(f(x), y) + beta * KL(p(x) || p(x')), x' = PGD-k(KL(p(x) || p(.))) from x + 0.001 N(0, I).

    As in the official code the inner maximization runs in eval mode with p(x) fixed, the KL is summed over
    classes and averaged over the batch, and p(x) is not detached in the outer loss.
    """
    with eval_mode(model):
        with torch.no_grad():
            logits_clean = model(x)
        x_adv = pgd_linf(
            model,
            x,
            x + 0.001 * torch.randn_like(x),
            lambda logits: kl_batchmean(logits_clean, logits),
            budget.eps,
            budget.train_steps,
            budget.train_step_size,
        )
    logits = model(x)
    return F.cross_entropy(logits, y) + budget.beta * kl_batchmean(logits, model(x_adv))


LOSSES: dict[str, Callable[[nn.Module, Tensor, Tensor, Budget], Tensor]] = {
    "pgd_at": pgd_at_loss,
    "trades": trades_loss,
}


def train(
    algorithm: str, x_train: Tensor, y_train: Tensor, budget: Budget
) -> tuple[nn.Module, list[float], float]:
    """Train a fresh seeded SmallCNN with ``algorithm``; returns ``(model, mean loss per epoch, seconds)``."""
    device = budget.device
    model = build_network(budget.seed, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    x_train, y_train = x_train.to(device), y_train.to(device)
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(budget.epochs):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(budget.seed + epoch))
        total, count = 0.0, 0
        for idx in order.to(device).split(budget.batch_size):
            x, y = x_train[idx], y_train[idx]
            loss = LOSSES[algorithm](model, x, y, budget)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        losses.append(total / count)
        print(
            f"{algorithm} epoch {epoch + 1}/{budget.epochs} loss {losses[-1]:.4f} "
            f"{time.perf_counter() - epoch_start:.1f}s",
            flush=True,
        )
    model.eval()
    return model, losses, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, in batches."""
    correct = sum(
        (model(xb).argmax(1) == yb).sum().item()
        for xb, yb in zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH), strict=True)
    )
    return correct / len(x)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, budget: Budget) -> float:
    """Accuracy under this script's PGD-k (CE, uniform start, seeded) at ``budget.eps``, in batches."""
    torch.manual_seed(budget.seed)
    correct = 0
    with eval_mode(model):
        for xb, yb in zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH), strict=True):
            x_adv = pgd_linf(
                model,
                xb,
                uniform_start(xb, budget.eps),
                lambda logits, yb=yb: F.cross_entropy(logits, yb),
                budget.eps,
                budget.eval_steps,
                budget.eval_step_size,
            )
            with torch.no_grad():
                correct += (model(x_adv).argmax(1) == yb).sum().item()
    return correct / len(x)


def autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, budget: Budget, log_path: Path) -> float:
    """Accuracy under the official AutoAttack (pyautoattack), Linf ``budget.eps``, seed 0, model in eval mode.

    Its progress log (logger ``auto-attack``) goes to ``log_path``; its per-attack ``torch.manual_seed`` calls
    run inside ``fork_rng`` so they leave this process's random stream alone. The accuracy is recomputed from
    the returned adversarial examples, after checking they lie in the eps ball.
    """
    from pyautoattack import AutoAttack

    model.eval()
    custom = budget.autoattack_version == "custom"
    attacks = list(budget.autoattack_attacks) if custom and budget.autoattack_attacks else None
    aa = AutoAttack(
        model,
        norm="Linf",
        eps=budget.eps,
        version=budget.autoattack_version,
        device=budget.device,
        seed=0,
        attacks=attacks,
    )
    if custom:
        aa.apgd.n_restarts = 1
    if budget.autoattack_iters is not None:
        for apgd in (aa.apgd, aa.apgd_targeted):
            set_apgd_iters(apgd, budget.autoattack_iters)
    logger = logging.getLogger("auto-attack")
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with torch.random.fork_rng(devices=[]):
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=EVAL_BATCH)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
    distance = (x_adv - x).abs().flatten(1).amax(1).max().item()
    if distance > budget.eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"AutoAttack returned points outside the eps ball or [0, 1] (Linf {distance})")
    return accuracy(model, x_adv, y)


def set_apgd_iters(apgd: Any, iters: int) -> None:
    """Set APGD's iterations and the step-size checkpoints its ``__init__`` derives from them."""
    apgd.n_iter = apgd.n_iter_orig = iters
    apgd.n_iter_2 = max(int(0.22 * iters), 1)
    apgd.n_iter_min = max(int(0.06 * iters), 1)
    apgd.size_decr = max(int(0.03 * iters), 1)


def run_algorithm(algorithm: str, data: tuple[Tensor, ...], budget: Budget, out: Path) -> dict[str, Any]:
    """Train and evaluate one algorithm; returns its JSON entry."""
    x_train, y_train, x_test, y_test = data
    if budget.n_train is not None:
        x_train, y_train = x_train[: budget.n_train], y_train[: budget.n_train]
    model, losses, seconds = train(algorithm, x_train, y_train, budget)
    x_test, y_test = x_test.to(budget.device), y_test.to(budget.device)
    subset = eval_subset(len(x_test), budget.n_eval).to(budget.device)
    x_eval, y_eval = x_test[subset], y_test[subset]
    eval_start = time.perf_counter()
    entry = {
        "clean_acc": accuracy(model, x_test, y_test),
        "n_clean": len(x_test),
        "pgd40_acc": pgd_accuracy(model, x_eval, y_eval, budget),
        "autoattack_acc": autoattack_accuracy(
            model, x_eval, y_eval, budget, out / f"autoattack_{algorithm}.log"
        ),
        "n_eval": len(x_eval),
        "train_seconds": round(seconds, 2),
        "eval_seconds": round(time.perf_counter() - eval_start, 2),
        "epochs": budget.epochs,
        "n_train": len(x_train),
        "epoch_losses": [round(value, 6) for value in losses],
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "budget": budget_json(budget),
    }
    print(
        f"{algorithm}: clean {entry['clean_acc']:.4f}  PGD-{budget.eval_steps} {entry['pgd40_acc']:.4f}  "
        f"AutoAttack {entry['autoattack_acc']:.4f}  train {seconds:.1f}s  eval {entry['eval_seconds']:.1f}s",
        flush=True,
    )
    return entry


# ------------------------------------------------------------------------------------------------- reporting


def budget_json(budget: Budget) -> dict[str, Any]:
    """The budget as JSON-compatible values (tuples as lists), the form it is compared in."""
    return json.loads(json.dumps(asdict(budget)))


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` to ``path`` atomically (a partial file never replaces a good one)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def leaderboard(results: Path, algorithm: str) -> tuple[float | None, float | None]:
    """``(clean_acc, AutoAttack Linf 0.3 accuracy)`` of the leaderboard's row, ``None`` where missing."""
    report = read_json(results / algorithm / "report.json") or {}
    robust = report.get("robust_acc")
    aa = robust.get(LEADERBOARD_AA_KEY) if isinstance(robust, dict) else None
    clean = report.get("clean_acc")
    return (clean if isinstance(clean, int | float) else None, aa if isinstance(aa, int | float) else None)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_markdown(entries: dict[str, Any], results: Path) -> str:
    """The reference numbers next to the leaderboard's, one row per algorithm."""
    lines = [
        "# Reference loops (plain PyTorch) vs the leaderboard (lit_robust), MNIST sample, Linf eps 0.3",
        "",
        "Generated by `benchmarks/reference_loops.py`; see its docstring for the budget. Clean accuracy on",
        "the 1,000 test digits; PGD-40 and AutoAttack on the seeded subset of `n_eval` test digits.",
        "",
        "| algorithm | epochs | n_eval | clean (ref) | PGD-40 (ref) | AutoAttack (ref) | clean (leaderboard) "
        "| AutoAttack (leaderboard) | train s | threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algorithm in ALGORITHMS:
        board_clean, board_aa = leaderboard(results, algorithm)
        entry = entries.get(algorithm)
        if entry is None:
            ours, tail = ["n/a"] * 5, ["n/a"] * 2
        else:
            ours = [
                str(entry["epochs"]),
                str(entry["n_eval"]),
                percent(entry["clean_acc"]),
                percent(entry["pgd40_acc"]),
                percent(entry["autoattack_acc"]),
            ]
            tail = [f"{entry['train_seconds']:.0f}", str(entry["num_threads"])]
        cells = [algorithm, *ours, percent(board_clean), percent(board_aa), *tail]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the leaderboard's folder")
    parser.add_argument("--only", choices=ALGORITHMS, default=None, help="run one algorithm")
    parser.add_argument("--force", action="store_true", help="recompute algorithms already in the JSON")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds-long pipeline check (default out: .../smoke)"
    )
    parser.add_argument(
        "--n-eval", type=int, default=None, help="test digits attacked (default 500, smoke 32)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return parser.parse_args(argv)


def make_budget(args: argparse.Namespace) -> Budget:
    budget = replace(Budget(), **SMOKE) if args.smoke else Budget()
    if args.n_eval is not None:
        if not 1 <= args.n_eval <= 1000:
            raise SystemExit(f"--n-eval must be in [1, 1000], got {args.n_eval}")
        budget = replace(budget, n_eval=args.n_eval)
    return replace(budget, device=args.device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = make_budget(args)
    out = args.out or (DEFAULT_OUT / "smoke" if args.smoke else DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / JSON_NAME
    stored = read_json(json_path) or {}
    entries: dict[str, Any] = dict(stored.get("algorithms", {}))
    data: tuple[Tensor, ...] | None = None
    for algorithm in [args.only] if args.only else ALGORITHMS:
        cached = entries.get(algorithm)
        if cached is not None and not args.force and cached.get("budget") == budget_json(budget):
            print(f"{algorithm}: skipped, cached in {json_path} (use --force to recompute)", flush=True)
            continue
        if cached is not None and not args.force:
            print(f"{algorithm}: cached result has another budget, recomputing", flush=True)
        data = data if data is not None else load_data()
        entries[algorithm] = run_algorithm(algorithm, data, budget, out)
        write_json(json_path, {"script": "benchmarks/reference_loops.py", "algorithms": entries})
    (out / MD_NAME).write_text(render_markdown(entries, args.results))
    print(f"wrote {json_path} and {out / MD_NAME}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
