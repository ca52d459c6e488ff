"""Multiply-accumulate counts of a network, measured by running it once."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of convolutions and matrix products for one forward pass on `example`, per image,
    as served: in inference mode (the readout head computes its first layer differently in
    training, net.Head).

    PyTorch's FLOP counter sees every convolution, functional ones included. Elementwise work
    (activations, normalisation, resizing, softmax) is left out, as is usual: it is a small
    share for a CNN and costs memory bandwidth rather than arithmetic."""
    training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(example)
    finally:
        model.train(training)
    return int(counter.get_total_flops()) // 2 // example.shape[0]
