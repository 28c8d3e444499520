"""The vectorized geohash equals pygeohash.encode(lat, lon, precision=5)."""

import numpy as np
import pygeohash
import pytest

from taxifare_core.contract import (
    DISTRICTS,
    LATITUDE_MAX,
    LATITUDE_MIN,
    LONGITUDE_MAX,
    LONGITUDE_MIN,
)
from taxifare_core.geohash import code_of, codes_to_strings, district_one_hot, geohash_strings


def reference(lat, lon):
    return np.array([pygeohash.encode(float(a), float(b), precision=5) for a, b in zip(lat, lon)])


def test_one_million_random_points_in_and_around_nyc():
    rng = np.random.default_rng(2026)
    n = 1_000_000
    lat = rng.uniform(LATITUDE_MIN - 0.5, LATITUDE_MAX + 0.5, n)
    lon = rng.uniform(LONGITUDE_MIN - 0.5, LONGITUDE_MAX + 0.5, n)
    ours = geohash_strings(lat, lon)
    mismatches = np.flatnonzero(ours != reference(lat, lon))
    assert mismatches.size == 0, [(lat[i], lon[i], ours[i]) for i in mismatches[:5]]


def test_points_exactly_on_cell_edges_and_box_edges():
    # Precision-5 cells are 360/2**13 degrees wide in longitude, 180/2**12 in latitude:
    # take every cell edge crossing the NYC box, and the float just below it.
    lon_edges = -180 + np.arange(2**13 + 1) * (360 / 2**13)
    lat_edges = -90 + np.arange(2**12 + 1) * (180 / 2**12)
    lon_edges = lon_edges[(lon_edges > -75) & (lon_edges < -73)]
    lat_edges = lat_edges[(lat_edges > 40) & (lat_edges < 41.5)]
    lon_all = np.concatenate([lon_edges, np.nextafter(lon_edges, -np.inf), [LONGITUDE_MIN, LONGITUDE_MAX]])
    lat_all = np.concatenate([lat_edges, np.nextafter(lat_edges, -np.inf), [LATITUDE_MIN, LATITUDE_MAX]])
    lat_grid, lon_grid = (g.ravel() for g in np.meshgrid(lat_all, lon_all))
    np.testing.assert_array_equal(geohash_strings(lat_grid, lon_grid), reference(lat_grid, lon_grid))


@pytest.mark.parametrize(
    "lat, lon",
    [(0.0, 0.0), (90.0, 180.0), (-90.0, -180.0), (-1e-9, -1e-9), (40.783282, -73.950655)],
)
def test_world_edges(lat, lon):
    assert geohash_strings([lat], [lon])[0] == pygeohash.encode(lat, lon, precision=5)


def test_codes_round_trip_and_district_one_hot():
    assert codes_to_strings([code_of(d) for d in DISTRICTS]).tolist() == list(DISTRICTS)
    # The example ride's pickup (Upper East Side) is in dr72j, the fifth district;
    # (0, 0) is in no district.
    one_hot = district_one_hot(np.array([40.783282, 0.0]), np.array([-73.950655, 0.0]))
    assert one_hot.shape == (2, 20)
    assert one_hot[0].tolist() == [0.0] * 4 + [1.0] + [0.0] * 15
    assert one_hot[1].sum() == 0
