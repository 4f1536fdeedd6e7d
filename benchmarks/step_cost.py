"""Cost of one training step of each defense, as a ratio to StandardTraining, measured side by side.

SmallCNN on MNIST-sized batches (128 x 1 x 28 x 28). Each defense runs in its own subprocess so
that its peak memory is its own, measured on its first step: on CUDA the peak of
``torch.cuda.max_memory_allocated`` above the memory allocated before the step, on CPU the peak
resident set size above the resident size before the step (coarse: the allocator's own behaviour
counts). Time is the median of ``--steps`` timed steps after
``--warmup`` untimed ones.

    python benchmarks/step_cost.py                 # every defense, table + benchmarks/results/
    python benchmarks/step_cost.py --steps 10 --device cuda
    python benchmarks/step_cost.py --only DeepDefense --steps 2   # StandardTraining + the matching ones

The double-backprop defenses should cost about 2-3 standard steps; local flatness about (K + 1)
times that; adversarial training about (attack steps + 1); Deep Defense about u x (K + 1) for u
unrolled DeepFool iterations over K candidate classes (u = 5, K = 9: ~50), each a double backprop
of a K-replicated batch. Deep Defense is measured on its costly branch: SmallCNN's zero-initialized
head is re-initialized and the labels are the network's own predictions, so every sample is
"correct" and gets untargeted DeepFool over K candidates (it stops early where a sample is fooled).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def _defenses() -> dict[str, Callable[[torch.nn.Module], torch.nn.Module]]:
    """Name -> factory, at each defense's default (the papers' MNIST settings)."""
    from lit_robust.attacks import PGD
    from lit_robust.defenses import (
        GFA,
        TRADES,
        AdversarialTraining,
        FlowGradientRegularization,
        InputGradientRegularization,
        LocalFlatnessRegularization,
        StandardTraining,
    )
    from lit_robust.defenses.deep_defense import DeepDefense

    pgd = PGD(0.3, steps=40, step_size=0.01)
    kl_pgd = PGD(0.3, steps=40, step_size=0.01, loss="kl", random_start="normal")
    return {
        "StandardTraining": StandardTraining,
        "AdversarialTraining (PGD-40)": lambda net: AdversarialTraining(net, attack=pgd),
        "TRADES (KL-PGD-40)": lambda net: TRADES(net, attack=kl_pgd, beta=1.0),
        "GFA (FIRST)": lambda net: GFA(net, taps="first"),
        "GFA (DEEP)": lambda net: GFA(net, taps="deep"),
        "InputGradientRegularization": InputGradientRegularization,
        "FlowGradientRegularization": FlowGradientRegularization,
        "LocalFlatnessRegularization (K=40)": LocalFlatnessRegularization,
        "DeepDefense (u=5, K=9)": lambda net: DeepDefense(_reset_head(net)),
        "DeepDefense (u=5, K=9, detach_prev_r)": lambda net: DeepDefense(
            _reset_head(net), detach_prev_r=True
        ),
        "DeepDefense (u=5, K=4)": lambda net: DeepDefense(_reset_head(net), num_candidates=5),
    }


PREDICTED_LABELS = ("DeepDefense",)  # defenses measured with y = the network's own predictions


def _reset_head(network: torch.nn.Module) -> torch.nn.Module:
    """SmallCNN with its zero-initialized last layer re-initialized (PyTorch's default), so the logits
    and their input gradients differ between classes as in a trained network."""
    network.classifier[-1].reset_parameters()
    return network


def _current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure_one(name: str, steps: int, warmup: int, device: str, batch_size: int) -> dict[str, float]:
    """Median seconds per training step and peak memory (bytes) of defense ``name``."""
    from lit_robust.models import SmallCNN

    torch.manual_seed(0)
    model = _defenses()[name](SmallCNN(mean=0.1307, std=0.3081)).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    if name.startswith(PREDICTED_LABELS):
        with torch.no_grad():
            y = model(x).argmax(dim=1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.compute_loss(x, y)["loss"].backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:  # the first step's growth of the peak RSS over the RSS before it (the allocator is still cold)
        base = _current_rss()
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_bytes": float(max(peak, 0))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", help="only the defenses whose name contains this (and StandardTraining)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one defense, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.steps, args.warmup, args.device, args.batch_size)))
        return

    rows = {}
    names = [n for n in _defenses() if n == "StandardTraining" or not args.only or args.only in n]
    for name in names:
        command = [sys.executable, __file__, "--one", name, "--steps", str(args.steps)]
        command += [
            "--warmup",
            str(args.warmup),
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
        ]
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows[name] = json.loads(output.strip().splitlines()[-1])
    base = rows["StandardTraining"]
    lines = [
        f"One training step, SmallCNN, batch {args.batch_size} x 1 x 28 x 28, device {args.device}, "
        f"median of {args.steps} steps",
        "",
        "| defense | ms / step | time ratio | peak memory (MiB) | memory ratio |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        memory_ratio = row["peak_bytes"] / base["peak_bytes"] if base["peak_bytes"] else float("nan")
        lines.append(
            f"| {name} | {1000 * row['seconds']:.1f} | {row['seconds'] / base['seconds']:.2f} | "
            f"{row['peak_bytes'] / 2**20:.1f} | {memory_ratio:.2f} |"
        )
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    lines += ["", f"Machine: {machine}. Command: `python benchmarks/step_cost.py --device {args.device}`"]
    table = "\n".join(lines)
    print(table)
    if args.only:  # a partial table is not written over the full results
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"step_cost_{args.device}.md").write_text(table + "\n")
    (RESULTS / f"step_cost_{args.device}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
