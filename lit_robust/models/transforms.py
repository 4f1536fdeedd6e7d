"""Input transforms placed in front of a network, and EOT for randomized ones.

* :class:`TotalVariationMinimization` (TVM; Guo, Rana, Cisse, van der Maaten, "Countering Adversarial
  Images using Input Transformations", ICLR 2018, arXiv:1711.00117; used by Wang et al., "Adversarial
  Defense via Data Dependent Activation Function and Total Variation Minimization", arXiv:1809.08516):
  drop random pixels, then reconstruct the image by total-variation inpainting. Non-differentiable and
  random, so it is attacked with BPDA (identity backward, built in) and EOT (:class:`EOT`).
* :class:`EOT` (Expectation over Transformation; Athalye, Engstrom, Ilyas, Kwok, ICML 2018): a model
  wrapper that averages the logits of a randomized model over independent draws, so every gradient
  attack of the suite computes an EOT gradient without changes.

Both take and give images in [0, 1] (pixel units), like every lit_robust model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lit_robust.functional.bpda import identity, straight_through
from lit_robust.functional.total_variation import check_tv_arguments, tv_inpaint
from lit_robust.validation import check_choice, check_int, check_optional_int, check_real

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _zero_gradient(x: Tensor) -> Tensor:
    return x * 0


class TotalVariationMinimization(nn.Module):
    """Random pixel dropout, then total-variation inpainting: ``z = TVM(x)``, images in [0, 1].

    For each image draw a keep-mask ``m ∈ {0, 1}^{C×H×W}``, every entry (pixel *and* channel)
    dropped independently with probability ``p = drop_prob``; dropped values are missing. Then

        z = argmin_z  ½ Σ m ⊙ (z - x)²  +  λ_TV · Σ_c Σ_ij ||(∇z_c)_ij||_2

    (isotropic TV, forward differences, channels independent), solved by Chambolle-Pock with a fixed
    number of iterations and without autograd
    (:func:`lit_robust.functional.total_variation.tv_inpaint`; same minimizer as Guo et al.'s split
    Bregman solver). Output in [0, 1], same shape and dtype as ``x``.

    Placement: ``nn.Sequential(TotalVariationMinimization(), network)`` (the network starts with its
    own ``Normalize``). It has no parameters or buffers, so the network's checkpoint is unchanged.

    * **Eval mode** (testing, and every attack: the attack suite puts models in eval mode): every
      image is transformed, with fresh masks at each call.
    * **Training mode**: each image is transformed with probability ``train_probability`` (default 1:
      always, like eval mode) and passed through unchanged otherwise. Training on TVM images (the
      paper's "augmented training", as we read it) mixes clean and TVM images with ``0 < p < 1``;
      ``train_probability=0`` makes the module the identity while training, so a network trained
      with it in front sees clean images only and is defended at test time (the spec's default
      ``train_tvm_prob = 0``).

    Gradients (``backward``): ``"identity"`` (default) is BPDA (Athalye, Carlini, Wagner, ICML 2018):
    the value is ``TVM(x)`` and the backward pass is the identity, so ``d/dx f(TVM(x))`` is
    ``∇f`` evaluated at ``TVM(x)`` (through :func:`lit_robust.functional.bpda.straight_through`).
    ``"none"``: the backward pass is zero, what a gradient attack would see without BPDA (for
    gradient-masking checks; attacks then fail for the wrong reason). The transform is random: attack
    it with EOT over the masks, e.g. ``EOT(nn.Sequential(TVM, network), samples=20)`` (:class:`EOT`)
    or AutoAttack ``version="rand"`` (pyautoattack's ``eot_iter=20``), as evaluation.md §6.3 asks.

    Args:
        drop_prob: probability ``p`` in [0, 1) that an entry is dropped (Guo et al.: 0.5).
        tv_weight: ``λ_TV > 0`` in pixel units (Guo et al.: 0.03).
        iterations: Chambolle-Pock iterations, >= 1 (200: objective within ~1e-3 relative of the
            optimum on MNIST digits, ~1e-4 on natural-like images, float32).
        backward: ``"identity"`` (BPDA) or ``"none"`` (zero gradient).
        train_probability: in [0, 1]; the share of images transformed in training mode (default 1).
        seed: an integer >= 0 or ``None``: seeds a private ``torch.Generator`` (one per device) for
            the masks (and the training-mode choice of images): a module built with the same seed
            draws the same masks, call after call. ``None`` (default) draws from torch's global
            generator, so ``seed_everything`` makes runs reproducible. :meth:`reseed` restarts the stream.
        solve_dtype: ``"float32"`` (default) or ``"float64"``: dtype of the solve; the output has
            ``x``'s dtype.

    Example (evaluate a trained checkpoint with TVM in front, BPDA + EOT, in user code; this module
    itself imports neither attacks nor defenses)::

        from torch import nn

        from lit_robust.attacks import APGDCE
        from lit_robust.defenses import RobustClassifier
        from lit_robust.models.transforms import EOT, TotalVariationMinimization

        net = RobustClassifier.load_from_checkpoint("runs/.../last.ckpt").network.eval()
        defended = nn.Sequential(TotalVariationMinimization(seed=0), net).eval()  # what is evaluated
        x_adv = APGDCE(eps=8 / 255)(EOT(defended, samples=20), x, y)     # BPDA + EOT gradients
        accuracy = sum((defended(x_adv).argmax(1) == y).float().mean() for _ in range(5)) / 5
    """

    def __init__(
        self,
        drop_prob: float = 0.5,
        tv_weight: float = 0.03,
        iterations: int = 200,
        backward: Literal["identity", "none"] = "identity",
        train_probability: float = 1.0,
        seed: int | None = None,
        solve_dtype: Literal["float32", "float64"] = "float32",
    ):
        super().__init__()
        self.drop_prob = check_real("drop_prob", drop_prob, 0, 1, high_open=True)
        check_tv_arguments(tv_weight, iterations)  # a finite tv_weight > 0 and an integer iterations >= 1
        self.tv_weight = float(tv_weight)
        self.iterations = iterations
        self.backward = check_choice("backward", backward, ("identity", "none"))
        self.train_probability = check_real("train_probability", train_probability, 0, 1)
        self.seed = check_optional_int("seed", seed, 0)
        self.solve_dtype = check_choice("solve_dtype", solve_dtype, tuple(_DTYPES))
        self._generators: dict[torch.device, torch.Generator] = {}

    # ----------------------------------------------------------------------------------- randomness
    def reseed(self, seed: int | None = None) -> None:
        """Restart the random stream from ``seed`` (default: the constructor's ``seed``)."""
        if seed is not None:
            self.seed = check_int("seed", seed, 0)
        self._generators = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _uniform(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        return torch.rand(shape, generator=self._generator(device), device=device)

    def sample_mask(self, x: Tensor) -> Tensor:
        """A fresh keep-mask like ``x`` (B, C, H, W): 1 = kept, with probability ``1 - drop_prob``."""
        return (self._uniform(tuple(x.shape), x.device) >= self.drop_prob).to(x.dtype)

    # ------------------------------------------------------------------------------------- forward
    def reconstruct(self, x: Tensor, mask: Tensor) -> Tensor:
        """The TV inpainting of ``x`` from its entries where ``mask`` is 1 (deterministic, no autograd)."""
        return tv_inpaint(x, mask, self.tv_weight, self.iterations, dtype=_DTYPES[self.solve_dtype])

    def _transform(self, x: Tensor, rows: Tensor | None) -> Tensor:
        if rows is None:
            return self.reconstruct(x, self.sample_mask(x))
        out = x.detach().clone()
        out[rows] = self.reconstruct(x[rows], self.sample_mask(x[rows]))
        return out

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"TotalVariationMinimization expects (B, C, H, W) images, got {tuple(x.shape)}")
        rows = None
        if self.training:
            if self.train_probability == 0:
                return x
            if self.train_probability < 1:
                rows = self._uniform((x.shape[0],), x.device) < self.train_probability
                if not rows.any():
                    return x
        if self.backward == "identity":
            approximation = identity
        elif rows is None:
            approximation = _zero_gradient
        else:  # zero gradient where transformed, the identity (exact) elsewhere
            keep = (~rows).to(x.dtype).view(-1, 1, 1, 1)

            def approximation(v: Tensor) -> Tensor:
                return v * keep

        return straight_through(x, lambda v: self._transform(v, rows), approximation)

    def extra_repr(self) -> str:
        return (
            f"drop_prob={self.drop_prob}, tv_weight={self.tv_weight}, iterations={self.iterations}, "
            f"backward={self.backward!r}, train_probability={self.train_probability}, seed={self.seed}, "
            f"solve_dtype={self.solve_dtype!r}"
        )


class EOT(nn.Module):
    """Expectation over Transformation: ``EOT(model)(x) = (1/S) Σ_{s=1..S} model_s(x)``, ``S = samples``.

    ``model`` is randomized (e.g. ``nn.Sequential(TotalVariationMinimization(), network)``); each of
    the ``S`` terms uses an independent draw of its randomness (the batch is repeated ``S`` times and
    sent through ``model`` in one pass, or in passes of ``draws_per_pass`` copies to bound memory).

    What is averaged (``average``):

    * ``"logits"`` (default): the mean of the logits. Its Jacobian is exactly the mean of the
      per-draw Jacobians, ``∂/∂x E_s[f_s(x)] = E_s[∂f_s/∂x]``, so the gradient of any loss that is
      linear in the logits (a CW or targeted margin ``z_t - z_y``) is exactly the mean of the per-draw
      gradients, and for CE / DLR it is the gradient at the averaged logits. Logits stay logits: the
      DLR loss of APGD-DLR / APGD-T keeps its meaning and AutoAttack sees no probability output.
    * ``"probabilities"``: ``log E_s[softmax(f_s(x))]``, the log-probabilities of the averaged
      classifier; CE on them is ``-log E_s[p_s(y)]``, the loss of the ensemble prediction.

    evaluation.md §6.3 asks for "the gradient averaged over 20 draws per step", i.e.
    ``E_s[∇L(f_s(x))]``; no model-level wrapper gives that for a nonlinear loss ``L`` (the loss is
    applied by the attack after the model). For APGD the exact form is AutoAttack ``version="rand"``
    (pyautoattack's ``eot_iter=20``, on the randomized model itself). This wrapper makes *every*
    attack (PGD, APGD-T, FAB, CW, ...) EOT-aware, through the mean logits; report which form ran.
    Evaluate the final adversarial examples on the randomized model itself with fresh draws (accuracy
    averaged over 5 draws), not on this wrapper.

    Args:
        model: a randomized model (inputs in [0, 1], logits out).
        samples: draws ``S`` >= 1 per forward (evaluation.md: 20).
        average: ``"logits"`` or ``"probabilities"``.
        draws_per_pass: copies of the batch per forward pass of ``model``, >= 1 (default: all ``S``).
    """

    def __init__(
        self,
        model: nn.Module,
        samples: int = 20,
        average: Literal["logits", "probabilities"] = "logits",
        draws_per_pass: int | None = None,
    ):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.samples = check_int("samples", samples, 1)
        self.average = check_choice("average", average, ("logits", "probabilities"))
        self.draws_per_pass = check_optional_int("draws_per_pass", draws_per_pass, 1)

    def forward(self, x: Tensor) -> Tensor:
        per_pass = self.draws_per_pass or self.samples
        total: Tensor | None = None
        for start in range(0, self.samples, per_pass):
            draws = min(per_pass, self.samples - start)
            out = self.model(x.repeat(draws, *([1] * (x.dim() - 1))))  # draw-major: (draws * B, K)
            out = out.view(draws, x.shape[0], *out.shape[1:])
            if self.average == "probabilities":
                out = out.softmax(-1)
            partial = out.sum(0)
            total = partial if total is None else total + partial
        mean = total / self.samples
        if self.average == "probabilities":
            return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
        return mean

    def extra_repr(self) -> str:
        return f"samples={self.samples}, average={self.average!r}, draws_per_pass={self.draws_per_pass}"


__all__ = ["EOT", "TotalVariationMinimization"]
