"""The log of the loss gradient's norm: an example third-party nasfleet zero-cost proxy.

It is published through the ``nasfleet.proxies`` entry point in ``pyproject.toml`` (the entry point's name
equals ``LogGradNorm.name``) and is never registered by import. It reads the gradients of the probe's one
shared backward pass, so it changes no weight and costs nothing beyond what other gradient proxies pay.
"""

from __future__ import annotations

import math

from nasfleet.proxies import Probe, Proxy

__all__ = ["LogGradNorm"]


class LogGradNorm(Proxy):
    """Log of the loss gradient's norm over every layer's weight: ``log(1 + ||dL/dW||)``.

    A variant of zero-cost-nas ``grad_norm`` (which sums one norm per layer): one norm over all weights,
    and a log so that values of networks of very different sizes stay comparable.
    """

    name = "log_grad_norm"
    higher_is_better = True
    needs_labels = True  # the loss needs labels; the engine refuses it on unlabeled data

    def compute(self, probe: Probe) -> float:
        squares = sum(float(grad.double().pow(2).sum()) for grad in probe.weight_grads)
        return math.log1p(math.sqrt(squares))
