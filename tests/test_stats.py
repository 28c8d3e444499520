"""Pure tests of taxifare_core.stats: the accumulator against numpy, exact merges, PSI by hand, the JSON shape."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from pipelines.preprocessing.encode import encode_rides
from taxifare_core import contract, drift, stats, stats_file
from taxifare_core.cleaning import clean
from taxifare_core.parsing import parse_frame


@pytest.fixture(scope="module")
def processed_rides(generated_rides_raw):
    """The generated rides that cleaning keeps: (processed rows (n, 66) float32, pickup ns, kept rides)."""
    typed, reasons = parse_frame(generated_rides_raw[list(contract.RAW_COLUMNS)])
    kept = clean(typed[reasons.isna().to_numpy()]).kept
    batch = encode_rides(kept)
    return batch.rows, batch.pickup_ns, kept


def finalize_rows(rows, pickup_ns=None) -> dict:
    return stats.finalize(stats.batch_accumulator(rows, pickup_ns))


def test_one_pass_matches_numpy_on_generated_rides(processed_rides):
    rows, pickup_ns, kept = processed_rides
    split = finalize_rows(rows, pickup_ns)
    exact = rows.astype(np.float64)
    assert split["rows"] == len(rows) > 7000
    assert [c["name"] for c in split["columns"]] == list(contract.PROCESSED_COLUMNS)
    for j, column in enumerate(split["columns"]):
        values = exact[:, j]
        assert column["count"] == len(values)
        assert column["mean"] == pytest.approx(values.mean(), rel=1e-12, abs=1e-12), column["name"]
        assert column["std"] == pytest.approx(values.std(ddof=0), rel=1e-9, abs=1e-12), column["name"]
        assert column["min"] == values.min() and column["max"] == values.max(), column["name"]
        edges = np.asarray(column["histogram"]["edges"])
        expected, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
        assert column["histogram"]["counts"] == expected.tolist(), column["name"]
    local = kept[contract.TIME_COLUMN].dt.tz_convert(contract.LOCAL_TIMEZONE)
    assert split["rides_per_month"] == local.dt.strftime("%Y-%m").value_counts().sort_index().to_dict()
    assert split["rides_per_hour"] == np.bincount(local.dt.hour, minlength=24).tolist()


def test_merge_in_any_order_equals_one_pass(processed_rides):
    rows, pickup_ns, _ = processed_rides
    whole = finalize_rows(rows, pickup_ns)
    cuts = [0, 1, 2, 500, 501, 3000, 5555, len(rows)]
    parts = [stats.batch_accumulator(rows[a:b], pickup_ns[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    parts.append(stats.new_accumulator())  # an empty split merges as nothing
    for seed in range(3):
        random.Random(seed).shuffle(parts)
        # pairwise, as a runner combining partial results in a tree would
        level = [stats.merge([stats.new_accumulator(), p]) for p in parts]
        while len(level) > 1:
            level = [stats.merge(level[i : i + 2]) for i in range(0, len(level), 2)]
        merged = stats.finalize(level[0])
        assert merged["rows"] == whole["rows"]
        assert merged["rides_per_month"] == whole["rides_per_month"]
        assert merged["rides_per_hour"] == whole["rides_per_hour"]
        for a, b in zip(merged["columns"], whole["columns"]):
            assert a["histogram"] == b["histogram"] and (a["min"], a["max"]) == (b["min"], b["max"])
            assert a["mean"] == pytest.approx(b["mean"], rel=1e-12, abs=1e-14)
            assert a["std"] == pytest.approx(b["std"], rel=1e-9, abs=1e-14)


def test_chan_merge_stays_accurate_far_from_zero():
    """A large offset with a tiny spread: the naive sum-of-squares formula would lose it, the merge does not."""
    rng = np.random.default_rng(0)
    rows = np.zeros((20_000, contract.N_PROCESSED_COLUMNS), dtype=np.float32)
    rows[:, contract.COLS_MONTH.start] = 1
    rows[:, contract.COLS_WEEKDAY.start] = 1
    rows[:, -1] = (300 + rng.normal(0, 0.01, len(rows))).astype(np.float32)
    parts = [stats.batch_accumulator(rows[i : i + 1000]) for i in range(0, len(rows), 1000)]
    merged = stats.finalize(stats.merge(parts))
    fare = merged["columns"][-1]
    assert fare["std"] == pytest.approx(rows[:, -1].astype(np.float64).std(), rel=1e-6)
    assert fare["histogram"]["counts"][-1] == len(rows)  # $300 is in the overflow bin [100, 400]


def test_edges_are_fixed_and_every_value_is_counted():
    for name in contract.PROCESSED_COLUMNS:
        edges = stats.COLUMN_EDGES[name]
        assert np.all(np.diff(edges) > 0), name
    assert stats.COLUMN_EDGES[contract.LABEL_COLUMN].tolist() == [*range(0, 101), 400]
    assert stats.COLUMN_EDGES["weekday_mon"].tolist() == [0.0, 0.5, 1.0]
    rows = np.zeros((4, contract.N_PROCESSED_COLUMNS), dtype=np.float32)
    rows[:, contract.COLS_MONTH.start] = rows[:, contract.COLS_WEEKDAY.start] = 1
    rows[:, contract.COL_DAYS] = [-0.5, 0.0, 1.19, 3.0]  # before 2009 and after the last edge
    rows[:, -1] = [0.5, 1.0, 99.99, 100.0]
    split = finalize_rows(rows)
    days = split["columns"][contract.COL_DAYS]["histogram"]["counts"]
    assert (days[0], days[-2], days[-1]) == (2, 0, 2)
    fare = split["columns"][-1]["histogram"]["counts"]
    assert (fare[0], fare[1], fare[99], fare[100]) == (1, 1, 1, 1)
    assert all(sum(c["histogram"]["counts"]) == 4 for c in split["columns"])


def test_non_binary_one_hot_values_take_the_general_path():
    rows = np.zeros((4, contract.N_PROCESSED_COLUMNS), dtype=np.float32)
    rows[:, contract.COLS_MONTH.start] = 1
    rows[:, contract.COLS_WEEKDAY.start] = [0.25, 0.75, 1.0, 0.0]
    column = finalize_rows(rows)["columns"][contract.COLS_WEEKDAY.start]
    values = rows[:, contract.COLS_WEEKDAY.start].astype(np.float64)
    assert column["mean"] == pytest.approx(values.mean()) and column["std"] == pytest.approx(values.std())
    assert (column["min"], column["max"]) == (0.0, 1.0)
    assert column["histogram"]["counts"] == [2, 2]


def test_local_month_at_new_year_and_without_pickup_times():
    """2013-01-01 02:00 UTC is 2012-12-31 21:00 in New York: December 2012, like its month one-hot."""
    stamps = pd.Series(pd.to_datetime(["2013-01-01 02:00:00", "2013-01-01 06:00:00", "2013-07-06 17:18:00"], utc=True))
    rides = pd.DataFrame(
        {
            contract.TIME_COLUMN: stamps,
            contract.LABEL_COLUMN: [5.0, 6.0, 7.0],
            "pickup_longitude": -73.95,
            "pickup_latitude": 40.78,
            "dropoff_longitude": -73.98,
            "dropoff_latitude": 40.77,
            contract.PASSENGER_COLUMN: 1,
        }
    )
    batch = encode_rides(rides[list(contract.RAW_COLUMNS)])
    expected = {"2012-12": 1, "2013-01": 1, "2013-07": 1}
    assert finalize_rows(batch.rows, batch.pickup_ns)["rides_per_month"] == expected
    assert finalize_rows(batch.rows[:, : contract.N_FEATURES])["rides_per_month"] == expected  # days column


def test_sixty_five_feature_statistics_have_no_fare(processed_rides):
    rows, _, _ = processed_rides
    split = finalize_rows(rows[:, : contract.N_FEATURES])
    assert [c["name"] for c in split["columns"]] == list(contract.FEATURE_NAMES)
    assert "fare_amount" not in drift.drift_scores(split, finalize_rows(rows))


def test_empty_split_and_json_round_trip():
    empty = stats.empty_split()
    assert empty["rows"] == 0 and empty["columns"][0]["mean"] is None and empty["rides_per_month"] == {}
    text = json.dumps({"splits": {"train": empty, "val": empty}})
    assert stats_file.parse_stats(text, "x")["splits"]["val"]["rows"] == 0
    assert drift.drift_scores(empty, empty)["fare_amount"] is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not JSON"),
        ('{"rows_read": 3}', 'no "splits"'),
        ('{"splits": {"train": {"rows": 1}}}', "has no rows and columns"),
    ],
)
def test_a_foreign_file_is_not_a_stats_file(text, message):
    with pytest.raises(stats_file.StatsError, match=message):
        stats_file.parse_stats(text, "f.json")


def test_psi_against_hand_computed_values():
    # shares (0.5, 0.5) -> (0.25, 0.75): (0.25-0.5) ln(0.25/0.5) + (0.75-0.5) ln(0.75/0.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert drift.psi([10, 20, 70], [10, 20, 70]) == 0.0
    assert drift.psi([1, 1], [2, 2]) == 0.0  # shares, not counts
    # an empty current bin gets the 1e-4 floor: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert drift.psi([5, 5], [0, 10]) == pytest.approx(expected)
    assert drift.psi([0, 0], [1, 2]) is None


def test_reference_bins_are_its_deciles_cut_at_fixed_edges():
    counts = [10] * 100
    starts = drift.reference_bins(counts)
    assert starts.tolist() == list(range(0, 100, 10))
    assert drift.grouped_counts(counts, starts).tolist() == [100.0] * 10
    assert drift.reference_bins([0, 0, 100, 0]).tolist() == [0, 3]  # all in one bin: two groups at most


def test_drift_scores_one_hot_groups_as_categoricals_with_none():
    rows = np.zeros((100, contract.N_PROCESSED_COLUMNS), dtype=np.float32)
    rows[:, contract.COLS_WEEKDAY.start] = rows[:, contract.COLS_MONTH.start] = 1
    rows[:50, contract.COLS_PICKUP_DISTRICT.start] = 1  # half in dr5ru, half in none of the 20
    rows[:, -1] = 10
    reference = finalize_rows(rows)
    moved = rows.copy()
    moved[:, contract.COLS_PICKUP_DISTRICT.start] = 1  # all in dr5ru now
    labels, counts = drift.group_counts(finalize_rows(moved), "pickup_district")
    assert labels[0] == "dr5ru" and labels[-1] == "none" and counts[0] == 100 and counts[-1] == 0
    scores = drift.drift_scores(finalize_rows(moved), reference)
    assert set(scores) == {
        "passenger_count_scaled",
        "days_since_2009_scaled",
        "hour_sin",
        "hour_cos",
        "haversine_km_scaled",
        "manhattan_km_scaled",
        "fare_amount",
        "weekday",
        "month",
        "pickup_district",
        "dropoff_district",
    }
    expected = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert scores["pickup_district"] == pytest.approx(expected, abs=1e-6)
    report = drift.drift_report(finalize_rows(moved), reference, "ref")
    assert report["flagged"] == ["pickup_district"]
    val_vs_train = drift.drift_report(finalize_rows(moved), reference, "train", expected=("pickup_district",))
    assert val_vs_train["flagged"] == [] and val_vs_train["expected"] == ["pickup_district"]
