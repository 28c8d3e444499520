"""Vectorized geohash (precision 5 by default), bit-identical to pygeohash.encode.

The hot path never builds strings: a geohash of precision p is a (5*p)-bit
integer, so district look-ups compare integers.

    >>> geohash_strings(np.array([40.783282]), np.array([-73.950655]))
    array(['dr72j'], dtype='<U5')
"""

from __future__ import annotations

import numpy as np

from taxifare_core.contract import DISTRICTS, GEOHASH_ALPHABET, GEOHASH_PRECISION

_DECODE = {char: value for value, char in enumerate(GEOHASH_ALPHABET)}


def geohash_codes(lat, lon, precision: int = GEOHASH_PRECISION) -> np.ndarray:
    """Integer geohash codes (5*precision bits, longitude bit first) of coordinate arrays."""
    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    # pygeohash wraps longitudes into [-180, 180] before bisecting.
    lon = np.asarray(lon, dtype=np.float64)
    lon = np.where(lon > 180.0, (lon + 180.0) % 360.0 - 180.0, lon)
    lon = np.where(lon < -180.0, (lon - 180.0) % -360.0 + 180.0, lon)
    codes = np.zeros(lat.shape, dtype=np.int64)
    lat_lo, lat_hi = np.full(lat.shape, -90.0), np.full(lat.shape, 90.0)
    lon_lo, lon_hi = np.full(lat.shape, -180.0), np.full(lat.shape, 180.0)
    for bit in range(5 * precision):
        # Same arithmetic and the same ">= midpoint" test as pygeohash's C codec.
        if bit % 2 == 0:
            mid = (lon_lo + lon_hi) * 0.5
            upper = lon >= mid
            lon_lo = np.where(upper, mid, lon_lo)
            lon_hi = np.where(upper, lon_hi, mid)
        else:
            mid = (lat_lo + lat_hi) * 0.5
            upper = lat >= mid
            lat_lo = np.where(upper, mid, lat_lo)
            lat_hi = np.where(upper, lat_hi, mid)
        codes = (codes << 1) | upper
    return codes


def code_of(geohash: str) -> int:
    """Integer code of one geohash string."""
    code = 0
    for char in geohash:
        code = (code << 5) | _DECODE[char]
    return code


def codes_to_strings(codes, precision: int = GEOHASH_PRECISION) -> np.ndarray:
    """Geohash strings of integer codes (for tests and display, not the hot path)."""
    codes = np.asarray(codes, dtype=np.int64)
    alphabet = np.array(list(GEOHASH_ALPHABET))
    chars = [alphabet[(codes >> (5 * (precision - 1 - i))) & 31] for i in range(precision)]
    return np.array(["".join(c) for c in zip(*chars)], dtype=f"<U{precision}")


def geohash_strings(lat, lon, precision: int = GEOHASH_PRECISION) -> np.ndarray:
    """Geohash strings of coordinate arrays."""
    return codes_to_strings(geohash_codes(lat, lon, precision), precision)


DISTRICT_CODES = np.array([code_of(d) for d in DISTRICTS], dtype=np.int64)


def district_one_hot(lat, lon) -> np.ndarray:
    """(n, len(DISTRICTS)) float32 one-hot of each point's district; all zeros if unlisted."""
    codes = geohash_codes(lat, lon)
    return (codes[:, None] == DISTRICT_CODES[None, :]).astype(np.float32)
