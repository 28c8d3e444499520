"""The data scientists' Keras network (CONTRACT.md section 5), with the loss as a choice.

TensorFlow / Keras are imported inside the functions: the preprocessing
pipeline imports `taxifare_core` on Beam workers that must not load TensorFlow.

    model = build_model(learning_rate=0.0005, loss="mse")
    model.fit(X, y, batch_size=256)
"""

from __future__ import annotations

import os
import sys

from taxifare_core.contract import (
    LEARNING_RATE,
    MODEL_BN_MOMENTUM,
    MODEL_DROPOUT,
    MODEL_L2,
    MODEL_UNITS,
    N_FEATURES,
)

LOSSES = ("mse", "huber", "mae")
# The network is tiny: a training step is bound by op dispatch, not arithmetic, so
# one TensorFlow thread trains as fast as several and leaves the other cores to the
# shard reader (measured on 2 cores: same or faster, a quarter less CPU).
TF_THREADS = int(os.environ.get("TAXIFARE_TF_THREADS", "1"))
# Gradient steps run per call into TensorFlow: with one step per call, Python's
# dispatch dominates this tiny network's step time. Same steps, same results;
# measured on 2 cores, 500k rows: 7.0 s at 1, 2.7 s at 16, no gain beyond.
STEPS_PER_EXECUTION = 16
# Huber's threshold in dollars: errors under it are squared, larger ones count linearly.
HUBER_DELTA = 1.0


def keras_module():
    """Keras, imported on first use with TensorFlow's start-up chatter kept off stderr."""
    if "keras" not in sys.modules:
        _quiet_tensorflow_import()
    import keras

    return keras


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow, set its thread count (TAXIFARE_TF_THREADS, 0 = TensorFlow's default)
    and probe devices, with stderr (fd 2) silenced.

    TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are printed before
    its log level applies; Python errors still surface once stderr is back.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            if TF_THREADS > 0:
                tf.config.threading.set_intra_op_parallelism_threads(TF_THREADS)
                tf.config.threading.set_inter_op_parallelism_threads(TF_THREADS)
            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def loss_function(name: str):
    """The Keras loss for a name in LOSSES."""
    keras = keras_module()
    if name == "mse":
        return keras.losses.MeanSquaredError()
    if name == "huber":
        return keras.losses.Huber(delta=HUBER_DELTA)
    if name == "mae":
        return keras.losses.MeanAbsoluteError()
    raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")


def build_model(learning_rate: float = LEARNING_RATE, loss: str = "mse", seed: int | None = None):
    """The contract's network, compiled with Adam, the chosen loss and the MAE metric."""
    keras = keras_module()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    layers = keras.layers
    first, second = MODEL_UNITS
    model = keras.Sequential(
        [
            keras.Input(shape=(N_FEATURES,)),
            layers.Dense(first, activation="relu", kernel_regularizer=keras.regularizers.L2(MODEL_L2)),
            layers.BatchNormalization(momentum=MODEL_BN_MOMENTUM),
            layers.Dropout(MODEL_DROPOUT),
            layers.Dense(second, activation="relu"),
            layers.BatchNormalization(momentum=MODEL_BN_MOMENTUM),
            layers.Dropout(MODEL_DROPOUT),
            layers.Dense(1, activation="linear"),
        ]
    )
    compile_model(model, learning_rate, loss)
    return model


def compile_model(model, learning_rate: float, loss: str) -> None:
    """(Re)compile with Adam at `learning_rate`, the named loss and MAE, STEPS_PER_EXECUTION steps per call."""
    keras = keras_module()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss_function(loss),
        metrics=["mae"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )


def validation_dataset(features, fares, batch_size: int):
    """Validation rows as a batched, cached tf.data dataset, built once for every `fit`.

    Handing `fit` numpy arrays rebuilds their input pipeline on each call
    (~50 ms for 20k rows, ~10x that for 200k); the trainer calls it once per chunk.
    """
    keras_module()
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((features, fares)).batch(batch_size).cache()
