"""FeatureSpec: fitted on training events only, then a fixed float layout for any events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecseq.features import CLIP, FeatureSpec


def _train(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(0.0, 3.0, n)  # heavy-tailed, non-negative
    gap = rng.normal(10.0, 2.0, n)
    gap[:7] = np.nan  # gaps in training -> a missing-value indicator
    colour = np.array(["red"] * 100 + ["blue"] * 60 + ["green"] * 36 + ["rare"] * 4, dtype=object)[:n]
    return pd.DataFrame({"user_id": "u", "amount": amount, "gap": gap, "temp": rng.normal(0.0, 1.0, n),
                         "colour": colour})


def _spec(frame: pd.DataFrame | None = None) -> FeatureSpec:
    return FeatureSpec.fit(_train() if frame is None else frame, ("amount", "gap", "temp"), ("colour",))


def test_layout_and_presence_column():
    spec = _spec()
    # presence + amount + (gap, gap missing) + temp + colour vocabulary (blue, green, red) + OOV
    assert spec.dim == 1 + 1 + 2 + 1 + 4
    assert spec.columns == ("amount", "gap", "temp", "colour")
    out = spec.transform(_train(50, seed=3))
    assert out.shape == (50, spec.dim) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], 1.0)


def test_numeric_standardised_and_clipped():
    frame = _train()
    spec = _spec(frame)
    temp = next(f for f in spec.numeric if f.name == "temp")
    assert not temp.log and not temp.has_missing
    out = spec.transform(frame)
    col = out[:, 4]  # presence, amount, gap, gap-missing, temp
    assert abs(col.mean()) < 1e-5 and abs(col.std() - 1.0) < 1e-4
    extreme = frame.head(2).copy()
    extreme["temp"] = [1e6, -1e6]
    np.testing.assert_array_equal(spec.transform(extreme)[:, 4], [CLIP, -CLIP])


def test_missing_numeric_gets_zero_and_indicator():
    frame = _train()
    spec = _spec(frame)
    gap = next(f for f in spec.numeric if f.name == "gap")
    assert gap.has_missing
    out = spec.transform(frame)
    missing = frame["gap"].isna().to_numpy()
    np.testing.assert_array_equal(out[:, 3], missing.astype(np.float32))
    np.testing.assert_array_equal(out[missing, 2], 0.0)
    expected = (frame["gap"].to_numpy()[~missing] - gap.center) / gap.scale
    np.testing.assert_allclose(out[~missing, 2], expected, rtol=1e-5, atol=1e-5)
    # columns complete in training get no indicator, even if later data has gaps
    assert not next(f for f in spec.numeric if f.name == "temp").has_missing
    late = frame.head(1).copy()
    late["temp"] = np.nan
    assert spec.transform(late)[0, 4] == 0.0


def test_heavy_tailed_non_negative_column_is_logged():
    frame = _train()
    spec = _spec(frame)
    amount = next(f for f in spec.numeric if f.name == "amount")
    assert amount.log
    logged = np.log1p(frame["amount"].to_numpy())
    assert amount.center == pytest.approx(logged.mean())
    assert amount.scale == pytest.approx(logged.std())
    out = spec.transform(frame)
    np.testing.assert_allclose(out[:, 1], np.clip((logged - amount.center) / amount.scale, -CLIP, CLIP),
                               rtol=1e-5, atol=1e-5)
    # the same tail with a negative value is not a log column
    signed = frame.copy()
    signed.loc[0, "amount"] = -1.0
    assert not next(f for f in _spec(signed).numeric if f.name == "amount").log


def test_categorical_one_hot_with_oov_for_unseen_and_missing():
    spec = _spec()
    colour = spec.categorical[0]
    assert colour.vocabulary == ("blue", "green", "red")  # "rare" is below min_count
    frame = _train().head(6).copy()
    frame["colour"] = ["red", "blue", "green", "rare", "never-seen", None]
    one_hot = spec.transform(frame)[:, 5:]
    np.testing.assert_array_equal(one_hot.sum(1), 1.0)
    np.testing.assert_array_equal(one_hot.argmax(1), [2, 0, 1, 3, 3, 3])


def test_categorical_respects_max_vocabulary():
    spec = FeatureSpec.fit(_train(), (), ("colour",), max_vocabulary=2, min_count=1)
    assert spec.categorical[0].vocabulary == ("blue", "red")  # the two most frequent, sorted
    assert spec.dim == 1 + 3


def test_vocabulary_learned_only_from_fit_frame():
    train = _train()
    spec = _spec(train)
    later = _train(50, seed=1)
    later["colour"] = "purple"  # plentiful later, but never in training
    before = spec.transform(later)
    assert "purple" not in spec.categorical[0].vocabulary
    np.testing.assert_array_equal(before[:, -1], 1.0)  # everything in the OOV slot
    # transforming other data does not change the spec
    assert spec == _spec(train)
    # and a spec fitted on different data learns different scaling
    assert _spec(later).numeric != spec.numeric


def test_json_round_trip_gives_identical_transform(tmp_path):
    spec = _spec()
    path = tmp_path / "features.json"
    spec.save(path)
    loaded = FeatureSpec.load(path)
    assert loaded == spec
    assert FeatureSpec.from_json(spec.to_json()) == spec
    frame = _train(80, seed=5)
    frame.loc[3, "colour"] = "unseen"
    frame.loc[4, "gap"] = np.nan
    np.testing.assert_array_equal(loaded.transform(frame), spec.transform(frame))


def _messy(n: int, seed: int) -> pd.DataFrame:
    """Events of every awkward kind: missing and infinite numbers, negatives and huge values in the
    log column, unseen and missing categories, as the event-table reader stores them (NaN = missing)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.lognormal(0.0, 3.0, n) * rng.choice([1.0, -1.0], n, p=[0.9, 0.1]),
                          "gap": rng.normal(10.0, 4.0, n), "temp": rng.normal(0.0, 3.0, n),
                          "colour": rng.choice(["red", "blue", "green", "rare"], n).astype(object)})
    frame.loc[rng.random(n) < 0.1, "amount"] = np.nan
    frame.loc[rng.random(n) < 0.02, "amount"] = 1e300
    frame.loc[rng.random(n) < 0.02, "gap"] = np.inf
    frame.loc[rng.random(n) < 0.1, "gap"] = np.nan
    frame["colour"] = np.where(rng.random(n) < 0.1, "never-seen", frame["colour"]).astype(object)
    frame.loc[rng.random(n) < 0.1, "colour"] = np.nan
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transform_arrays_equals_transform_exactly(seed):
    spec = _spec()
    assert spec.numeric[0].log and spec.numeric[1].has_missing
    frame = _messy(2000, seed)
    numeric = frame[["amount", "gap", "temp"]].to_numpy(dtype=np.float64)
    colour = [None if isinstance(v, float) else v for v in frame["colour"]]
    np.testing.assert_array_equal(spec.transform_arrays(numeric, [colour]), spec.transform(frame))
    # float32 input (as user histories hold it) is the same as the float64 it widens to
    with np.errstate(over="ignore"):
        narrow = numeric.astype(np.float32)  # 1e300 -> inf: missing, in both
    np.testing.assert_array_equal(spec.transform_arrays(narrow, [colour]),
                                  spec.transform(frame.assign(**{c: narrow[:, j] for j, c in
                                                                 enumerate(["amount", "gap", "temp"])})))


def test_transform_slots_via_distinct_values_equals_transform():
    spec = _spec()
    frame = _messy(500, 3)
    values = ["red", "blue", "never-seen", None]
    pick = np.random.default_rng(0).integers(0, len(values), len(frame))
    frame["colour"] = [np.nan if values[i] is None else values[i] for i in pick]
    slots = spec.category_slots(values)
    assert slots.shape == (4, 1) and slots[:, 0].tolist() == [2, 0, 3, 3]
    got = spec.transform_slots(frame[["amount", "gap", "temp"]].to_numpy(), slots[pick])
    np.testing.assert_array_equal(got, spec.transform(frame))


def test_a_missing_category_is_out_of_vocabulary_even_when_the_text_nan_was_a_training_value():
    frame = pd.DataFrame({"c": ["nan"] * 10 + ["a"] * 10})
    spec = FeatureSpec.fit(frame, (), ("c",))
    assert spec.categorical[0].vocabulary == ("a", "nan")
    table_like = pd.DataFrame({"c": [np.nan, "a", "b", "nan"]}, dtype=object)
    expected = spec.transform(table_like)
    np.testing.assert_array_equal(expected[:, 1:].argmax(1), [2, 0, 2, 1])
    np.testing.assert_array_equal(spec.transform_arrays(np.empty((4, 0)), [[None, "a", "b", "nan"]]), expected)


def test_transform_arrays_checks_shapes():
    spec = _spec()
    with pytest.raises(ValueError, match="numeric"):
        spec.transform_arrays(np.zeros((3, 2)), [["red"] * 3])
    with pytest.raises(ValueError, match="columns"):
        spec.transform_arrays(np.zeros((3, 3)), [])
    with pytest.raises(ValueError, match="colour has 2 values for 3 rows"):
        spec.transform_arrays(np.zeros((3, 3)), [["red"] * 2])
    with pytest.raises(ValueError, match="slot"):
        spec.transform_slots(np.zeros((1, 3)), np.array([[4]]))
