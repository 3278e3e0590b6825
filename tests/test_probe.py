"""The shared probe: batches, per-sample gradients, Jacobian sketches and memory release."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from nasfleet.data.datasets import synthetic_dataset
from nasfleet.proxies.probe import Probe, ProbeBatch, per_sample_weight_grads
from nasfleet.spaces import get_space


def _batch(size: int = 6, shape: tuple[int, int, int] = (3, 16, 16), classes: int = 5) -> ProbeBatch:
    generator = torch.Generator().manual_seed(0)
    return ProbeBatch(torch.randn(size, *shape, generator=generator), torch.arange(size) % classes, classes)


@pytest.mark.parametrize("space_name", ["nb201", "mbv2"])
def test_per_sample_gradients_add_up_to_the_batch_gradient(space_name: str) -> None:
    space = get_space(space_name)
    batch = _batch()
    torch.manual_seed(0)
    network = space.build(space.sample(np.random.default_rng(2)), batch.num_classes, batch.input_shape)
    with Probe(network, batch) as probe:
        for layer, grad in zip(probe.layers, probe.weight_grads, strict=True):
            per_sample = probe.per_sample_grads(layer)
            assert per_sample.shape == (batch.size, layer.module.weight.numel())
            # float32 sums whose reduction order depends on torch's thread count (other tests change it)
            scale = float(grad.abs().max())
            torch.testing.assert_close(
                per_sample.sum(0), grad.flatten(), rtol=1e-4, atol=1e-5 * max(scale, 1e-3)
            )


def test_strided_dilated_grouped_convolution_per_sample_gradients() -> None:
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    inputs = torch.randn(3, 4, 9, 9)
    grad_output = torch.randn(3, 6, 5, 5)
    expected = []
    for i in range(3):
        conv.zero_grad()
        conv(inputs[i : i + 1]).backward(grad_output[i : i + 1])
        assert conv.weight.grad is not None
        expected.append(conv.weight.grad.flatten().clone())
    torch.testing.assert_close(per_sample_weight_grads(conv, inputs, grad_output), torch.stack(expected))


def test_sketches_are_deterministic_and_memoised() -> None:
    space = get_space("nb201")
    batch = _batch()
    torch.manual_seed(0)
    network = space.build((3, 2, 3, 1, 3, 4), batch.num_classes, batch.input_shape)
    probe = Probe(network, batch, seed=5)
    first = probe.block_jacobian_sketches(2)
    assert probe.block_jacobian_sketches(2) is first
    assert len(first) == len(network.main_blocks)
    again = Probe(network, batch, seed=5).block_jacobian_sketches(2)
    for (a_v, a_p), (b_v, b_p) in zip(first, again, strict=True):
        torch.testing.assert_close(a_v, b_v)
        torch.testing.assert_close(a_p, b_p)
    with pytest.raises(ValueError, match="n_probes"):
        probe.block_jacobian_sketches(0)


def test_closing_a_probe_frees_it_and_its_graph() -> None:
    space = get_space("nb201")
    batch = _batch()
    network = space.build((3,) * 6, batch.num_classes, batch.input_shape)
    probe = Probe(network, batch)
    probe.weight_grads  # noqa: B018 - runs forward and backward with hooks installed
    probe.block_jacobian_sketches(1)
    logits_ref = weakref.ref(probe.logits)
    probe_ref = weakref.ref(probe)
    probe.close()
    del probe
    gc.collect()
    assert probe_ref() is None and logits_ref() is None


def test_batches_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="inputs must have shape"):
        ProbeBatch(torch.zeros(1, 3, 8, 8), None, 10)
    with pytest.raises(ValueError, match="finite"):
        ProbeBatch(torch.full((2, 3, 8, 8), float("nan")), None, 10)
    with pytest.raises(ValueError, match="labels must lie"):
        ProbeBatch(torch.zeros(2, 3, 8, 8), torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match="labels must have shape"):
        ProbeBatch(torch.zeros(2, 3, 8, 8), torch.tensor([0]), 10)
    data = synthetic_dataset(n=20, num_classes=4, input_shape=(1, 8, 8), seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        ProbeBatch.from_dataset(data, 21, seed=0)
    a, b = ProbeBatch.from_dataset(data, 8, seed=1), ProbeBatch.from_dataset(data, 8, seed=1)
    assert torch.equal(a.inputs, b.inputs) and a.labels is not None and b.labels is not None
    assert torch.equal(a.labels, b.labels)
    assert ProbeBatch.from_dataset(data, 8, seed=1, labeled=False).labels is None


def test_networks_must_declare_main_blocks() -> None:
    with pytest.raises(ValueError, match="main_blocks"):
        Probe(torch.nn.Linear(3, 2), _batch())
