"""The contract's network as a plain numpy forward pass, from weights exported once from Keras.

Keras's `model.predict` costs about 100 ms per call and a direct `model(x)` call
about 8 ms, while the network's arithmetic (65 -> 100 -> 50 -> 1) takes
microseconds: a web service pricing one ride per request serves at numpy's
speed with this instead. Inference mode only: Dropout is the identity and each
BatchNormalization is the affine map of its moving statistics, folded into the
Dense layer that follows it (so the pass is three matrix products).

This module never imports TensorFlow: `from_keras` only reads a loaded model's
layer configs and weights.

    net = from_keras(registry.load_model())   # once, at start-up
    net(features)                             # float32 (n, 65) -> float64 (n,) fares
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
}


class UnsupportedModelError(ValueError):
    """The Keras model has a layer or setting the numpy pass does not reproduce."""


@dataclass(frozen=True)
class DenseStep:
    """activation(x @ kernel + bias), float64."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str


@dataclass(frozen=True)
class ForwardPass:
    """The network as Dense steps (BatchNormalization folded in), plus a trailing affine map if any."""

    steps: tuple[DenseStep, ...]
    tail_scale: np.ndarray | None = None
    tail_shift: np.ndarray | None = None

    @property
    def n_inputs(self) -> int:
        """Width of the input rows."""
        return self.steps[0].kernel.shape[0]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Outputs for a batch (n, n_inputs), float64; shape (n,) when the network has one output."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"expected rows of {self.n_inputs} features, got shape {x.shape}")
        for step in self.steps:
            x = _ACTIVATIONS[step.activation](x @ step.kernel + step.bias)
        if self.tail_scale is not None:
            x = x * self.tail_scale + self.tail_shift
        return x[:, 0] if x.shape[1] == 1 else x


def _batch_norm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNormalization layer in inference mode as (scale, shift): x * scale + shift."""
    config = layer.get_config()
    axis = config.get("axis", -1)
    if axis not in (-1, [-1], 1, [1]):
        raise UnsupportedModelError(f"layer {layer.name}: BatchNormalization over axis {axis}")
    weights = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
    gamma = weights.pop(0) if config.get("scale", True) else None
    beta = weights.pop(0) if config.get("center", True) else None
    mean, variance = weights
    scale = 1.0 / np.sqrt(variance + config["epsilon"])
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale + (beta if beta is not None else 0.0)
    return scale, shift


def from_keras(model) -> ForwardPass:
    """Export a loaded Keras Sequential model of Dense / BatchNormalization / Dropout layers."""
    steps: list[DenseStep] = []
    scale = shift = None  # a BatchNormalization waiting for the next Dense layer
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Dropout", "InputLayer"):
            continue
        if kind == "BatchNormalization":
            bn_scale, bn_shift = _batch_norm_affine(layer)
            if scale is None:
                scale, shift = bn_scale, bn_shift
            else:
                scale, shift = scale * bn_scale, shift * bn_scale + bn_shift
            continue
        if kind != "Dense":
            raise UnsupportedModelError(f"layer {layer.name}: {kind} is not supported by the numpy forward pass")
        config = layer.get_config()
        activation = config.get("activation", "linear")
        if activation not in _ACTIVATIONS:
            raise UnsupportedModelError(f"layer {layer.name}: activation {activation!r} is not supported")
        weights = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
        kernel = weights[0]
        bias = weights[1] if config.get("use_bias", True) else np.zeros(kernel.shape[1])
        if scale is not None:
            # (x * s + t) @ W + b  ==  x @ (s[:, None] * W) + (t @ W + b)
            kernel, bias = scale[:, None] * kernel, shift @ kernel + bias
            scale = shift = None
        steps.append(DenseStep(kernel, bias, activation))
    if not steps:
        raise UnsupportedModelError("the model has no Dense layer")
    return ForwardPass(tuple(steps), scale, shift)
