"""Batch transforms: Normalize, translate / RandomTranslate (1-D, 2-D, 3-D), PermutePositions,
Compose."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import Compose, Normalize, PermutePositions, RandomTranslate, translate


def _translate_reference(xb: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """One sample at a time: out[n, c, i] = x[n, c, i - v_n] when inside, else 0."""
    out = np.zeros_like(xb)
    spatial = xb.shape[2:]
    for n in range(xb.shape[0]):
        for index in np.ndindex(*spatial):
            source = tuple(i - v for i, v in zip(index, shifts[n], strict=True))
            if all(0 <= s < size for s, size in zip(source, spatial, strict=True)):
                out[(n, slice(None), *index)] = xb[(n, slice(None), *source)]
    return out


@settings(max_examples=25, deadline=None)
@given(
    spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    batch=st.integers(1, 3),
    data=st.data(),
)
def test_translate_matches_per_sample_reference(spatial, batch, data):
    shape = (batch, 2, *spatial)
    xb = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    shifts = np.array(
        data.draw(st.lists(st.lists(st.integers(-6, 6), min_size=len(spatial),
                                    max_size=len(spatial)), min_size=batch, max_size=batch))
    ).reshape(batch, len(spatial))
    np.testing.assert_array_equal(translate(xb, shifts), _translate_reference(xb, shifts))


def test_translate_examples_1d_and_2d():
    row = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    assert translate(row, np.array([[2]])).tolist() == [[[0, 0, 1, 2, 3]]]
    assert translate(row, np.array([[-1]])).tolist() == [[[2, 3, 4, 5, 0]]]
    assert translate(row, np.array([[9]])).tolist() == [[[0, 0, 0, 0, 0]]]
    image = np.zeros((2, 1, 3, 3), np.float32)
    image[:, 0, 1, 1] = 1
    moved = translate(image, np.array([[1, 0], [-1, 1]]))
    assert moved[0, 0, 2, 1] == 1 and moved[1, 0, 0, 2] == 1 and moved.sum() == 2
    assert image[:, 0, 1, 1].tolist() == [1, 1]  # the input is untouched


def test_translate_shape_error():
    expected = r"translate: shifts must have shape .*\(2, 1\), got \(2, 2\)"
    with pytest.raises(ValueError, match=expected):
        translate(np.zeros((2, 1, 4)), np.zeros((2, 2), np.int64))


def test_random_translate_draws_per_sample_shifts_within_bounds():
    transform = RandomTranslate((2, 1), rng=np.random.default_rng(0))
    shifts = transform.sample_shifts(2000, 2)
    assert shifts.min(axis=0).tolist() == [-2, -1] and shifts.max(axis=0).tolist() == [2, 1]
    xb = np.random.default_rng(1).random((64, 3, 6, 6)).astype(np.float32)
    out = transform(xb)
    assert out.shape == xb.shape and out.dtype == np.float32
    # All channels of a sample move together: the zero-filled border is the same per channel.
    assert np.array_equal(out[:, 0] == 0, out[:, 1] == 0)
    assert len({tuple(np.argwhere(o[0] != 0).min(axis=0)) for o in out}) > 1


def test_random_translate_is_seeded_and_resumable():
    xb = np.ones((8, 1, 10), np.float32)
    first = RandomTranslate(3, rng=np.random.default_rng(5))
    second = RandomTranslate(3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(first(xb), second(xb))
    state = first.state_dict()
    expected = first(xb)
    other = RandomTranslate(3, rng=np.random.default_rng(6))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(xb), expected)


def test_random_translate_zero_shift_is_identity():
    xb = np.random.default_rng(0).random((4, 2, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(RandomTranslate(0, rng=np.random.default_rng(0))(xb), xb)


@pytest.mark.parametrize(
    ("max_shift", "error", "match"),
    [(-1, ValueError, "max_shift must be >= 0, got -1"),
     (1.5, TypeError, "max_shift must be an int or a tuple of ints, got 1.5"),
     ((), TypeError, "max_shift must be an int or a tuple of ints")],
)
def test_random_translate_bad_arguments(max_shift, error, match):
    with pytest.raises(error, match=f"RandomTranslate: {match}"):
        RandomTranslate(max_shift)


def test_random_translate_rank_mismatch():
    with pytest.raises(ValueError, match="max_shift has 2 values but the input has 1 spatial"):
        RandomTranslate((1, 1))(np.zeros((2, 1, 5)))
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, \*spatial\)"):
        RandomTranslate(1)(np.zeros(5))


@settings(max_examples=25, deadline=None)
@given(
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_permute_positions_matches_per_position_reference(spatial, batch, seed):
    shape = (batch, 2, *spatial)
    xb = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    permutation = np.random.default_rng(seed).permutation(int(np.prod(spatial)))
    out = PermutePositions(permutation)(xb)
    # Positions in C order: out's j-th position is xb's permutation[j]-th, every sample and
    # channel alike.
    positions = list(np.ndindex(*spatial))
    expected = np.empty_like(xb)
    for j, source in enumerate(permutation):
        expected[(slice(None), slice(None), *positions[j])] = xb[
            (slice(None), slice(None), *positions[source])]
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == xb.dtype and not np.shares_memory(out, xb)
    np.testing.assert_array_equal(PermutePositions(permutation).inverse()(out), xb)


def test_permute_positions_example_and_repr():
    shuffle = PermutePositions((2, 0, 1))
    np.testing.assert_array_equal(shuffle(np.array([[[1.0, 2.0, 3.0]]])), [[[3.0, 1.0, 2.0]]])
    assert repr(shuffle) == "PermutePositions([2, 0, 1])"
    assert repr(shuffle.inverse()) == "PermutePositions([1, 2, 0])"
    with pytest.raises(ValueError, match="read-only"):
        shuffle.permutation[0] = 1  # fixed once made


@pytest.mark.parametrize(
    ("permutation", "error", "match"),
    [([0, 0, 1], ValueError, r"hold each of 0\.\.2 exactly once, got \[0, 0, 1\]"),
     ([1, 2, 3], ValueError, r"hold each of 0\.\.2 exactly once, got \[1, 2, 3\]"),
     ([], TypeError, r"be a non-empty 1-D sequence of ints, got \[\]"),
     ([0.0, 1.0], TypeError, r"be a non-empty 1-D sequence of ints, got \[0\.0, 1\.0\]"),
     ([[0, 1]], TypeError, "be a non-empty 1-D sequence of ints"),
     ([[0], [0, 1]], TypeError, "be a non-empty 1-D sequence of ints"),
     (3, TypeError, "be a non-empty 1-D sequence of ints, got 3")],
)
def test_permute_positions_bad_permutation(permutation, error, match):
    with pytest.raises(error, match=f"PermutePositions: permutation must {match}"):
        PermutePositions(permutation)


def test_permute_positions_size_mismatch_at_call():
    with pytest.raises(ValueError, match=r"the permutation has 3 positions but the input has 4 "
                                         r"\(spatial shape \(2, 2\), input shape \(1, 1, 2, 2\)\)"):
        PermutePositions([2, 0, 1])(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"PermutePositions: input must have shape \(N, C"):
        PermutePositions([0])(np.zeros(5))


def test_normalize_per_channel():
    xb = np.random.default_rng(0).random((4, 3, 2, 2)).astype(np.float32)
    mean, std = [0.1, 0.2, 0.3], [1.0, 2.0, 4.0]
    out = Normalize(mean, std)(xb)
    expected = (xb - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(Normalize(0.5, 0.25)(xb), (xb - 0.5) / 0.25, rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [(0.0, 0.0, "std must be > 0"), ([0.0, 1.0], [1.0, 1.0, 1.0], "the same number of channels"),
     ([[0.0]], 1.0, "mean must be a float or a 1-D sequence")],
)
def test_normalize_bad_arguments(mean, std, match):
    with pytest.raises(ValueError, match=f"Normalize: (mean and std must have )?{match}"):
        Normalize(mean, std)


def test_normalize_channel_mismatch_at_call():
    with pytest.raises(ValueError, match="mean has 3 values but the input has 2 channels"):
        Normalize([0, 0, 0], 1.0)(np.zeros((1, 2, 4)))


def test_compose_applies_in_order_and_collects_state():
    translate_first = RandomTranslate(1, rng=np.random.default_rng(0))
    composed = Compose([Normalize(1.0, 2.0), translate_first])
    xb = np.full((3, 1, 4), 5.0, np.float32)
    state = composed.state_dict()
    assert list(state) == ["1"]
    out = composed(xb)
    assert set(np.unique(out)) <= {0.0, 2.0}  # normalised, then zero-filled
    again = Compose([Normalize(1.0, 2.0), RandomTranslate(1, rng=np.random.default_rng(9))])
    again.load_state_dict(state)
    np.testing.assert_array_equal(again(xb), out)
    with pytest.raises(TypeError, match=r"Compose: transforms\[0\] must be callable"):
        Compose([1])
    assert "RandomTranslate(max_shift=1)" in repr(composed)
