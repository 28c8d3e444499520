"""The data scientists' baseline: a linear regression of fare on manhattan distance, streamed.

Fitted in closed form from running sums (count, means, co-moments merged chunk
by chunk with Chan's parallel update, stable over millions of rows), so it
sees the same train stream as the network at no extra pass; its state is a
small dict that goes into the trainer's JSON checkpoint.

    fit = RunningLinearFit()
    for features, fares in chunks: fit.update(manhattan_km_of(features), fares)
    fit.mae(manhattan_km_of(val_features), val_fares)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from taxifare_core.contract import COL_MANHATTAN, DISTANCE_SCALE_KM


def manhattan_km_of(features: np.ndarray) -> np.ndarray:
    """The manhattan distance in km, unscaled from the feature matrix's column."""
    return features[:, COL_MANHATTAN].astype(np.float64) * DISTANCE_SCALE_KM


@dataclass
class RunningLinearFit:
    """Least-squares y = intercept + slope * x over a stream of (x, y) batches."""

    count: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    m2_x: float = 0.0  # sum of squared deviations of x
    c_xy: float = 0.0  # sum of co-deviations of x and y

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Merge one batch into the running sums."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        n = len(x)
        if n == 0:
            return
        batch_mean_x, batch_mean_y = x.mean(), y.mean()
        batch_m2_x = float(((x - batch_mean_x) ** 2).sum())
        batch_c_xy = float(((x - batch_mean_x) * (y - batch_mean_y)).sum())
        total = self.count + n
        dx, dy = batch_mean_x - self.mean_x, batch_mean_y - self.mean_y
        self.m2_x += batch_m2_x + dx * dx * self.count * n / total
        self.c_xy += batch_c_xy + dx * dy * self.count * n / total
        self.mean_x += dx * n / total
        self.mean_y += dy * n / total
        self.count = total

    @property
    def slope(self) -> float:
        """Fare per km (0 when all distances are equal)."""
        return self.c_xy / self.m2_x if self.m2_x > 0 else 0.0

    @property
    def intercept(self) -> float:
        """Fare at zero distance."""
        return self.mean_y - self.slope * self.mean_x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted fares for distances x."""
        return self.intercept + self.slope * np.asarray(x, dtype=np.float64)

    def mae(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean absolute error on (x, y)."""
        return float(np.mean(np.abs(self.predict(x) - np.asarray(y, dtype=np.float64))))

    def state(self) -> dict:
        """JSON-ready running sums."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> RunningLinearFit:
        """Rebuild from `state()`."""
        return cls(**state)
