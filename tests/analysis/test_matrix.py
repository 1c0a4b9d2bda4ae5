"""conv_matrix against the engine's own convolutions (an independent implementation: the
engine's GEMM/FFT kernels never build this matrix) and against PyTorch's definition."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from cnnlab import functional as F
from cnnlab.analysis import conv_matrix, conv_matrix_stats

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d}

CASES = [  # (spatial, c_in, c_out, kernel, settings)
    ((9,), 2, 3, (3,), {}),
    ((9,), 2, 4, (3,), {"stride": 2, "padding": 1, "groups": 2}),
    ((10,), 1, 2, (3,), {"dilation": 3, "padding": "same"}),
    ((7,), 1, 1, (4,), {"padding": "full"}),
    ((8,), 1, 2, (3,), {"padding": "causal", "dilation": 2}),
    ((8,), 3, 3, (3,), {"padding": ((2, 1),), "groups": 3}),
    ((9,), 1, 1, (3,), {"padding": 4, "padding_mode": "circular"}),
    ((9,), 2, 1, (5,), {"padding": 2, "padding_mode": "reflect", "stride": 3}),
    ((6,), 1, 2, (3,), {"padding": (3,), "padding_mode": "replicate"}),
    ((6, 7), 2, 4, (3, 2), {"stride": (2, 1), "padding": (1, 0)}),
    ((8, 8), 4, 2, (3, 3), {"padding": "same", "dilation": 2, "groups": 2}),
    ((5, 6), 1, 3, (3, 3), {"padding": 1, "padding_mode": "circular"}),
    ((5, 6), 2, 2, (3, 3), {"padding": ((1, 2), (2, 0)), "padding_mode": "reflect"}),
    ((5, 5), 1, 1, (2, 2), {"padding": 1, "padding_mode": "replicate", "stride": 2}),
    ((4, 5, 3), 2, 2, (2, 3, 1), {"padding": (1, 1, 0), "stride": (1, 2, 1)}),
]


@pytest.mark.parametrize("spatial, c_in, c_out, kernel, settings", CASES)
def test_matrix_times_input_is_the_convolution(spatial, c_in, c_out, kernel, settings):
    rng = np.random.default_rng(len(spatial) + c_in + c_out)
    groups = settings.get("groups", 1)
    w = rng.standard_normal((c_out, c_in // groups, *kernel))
    x = rng.standard_normal((c_in, *spatial))
    m = conv_matrix(w, (c_in, *spatial), **settings)
    expected = CONV[len(spatial)](x[None], w, **settings, algorithm="direct")[0]
    assert isinstance(m, scipy.sparse.csr_matrix) and m.dtype == np.float64
    assert m.shape == (expected.size, x.size)
    np.testing.assert_allclose(m @ x.ravel(), expected.ravel(), rtol=1e-12, atol=1e-12)


def test_matrix_entries_are_the_lecture_band_of_weights():
    # 1-D, one channel, no padding: row i holds w at columns i..i+k-1 (Toeplitz band).
    w = np.array([1.0, -2.0, 3.0])
    m = conv_matrix(w[None, None], (1, 6)).toarray()
    expected = np.array([[1, -2, 3, 0, 0, 0], [0, 1, -2, 3, 0, 0],
                         [0, 0, 1, -2, 3, 0], [0, 0, 0, 1, -2, 3]], float)
    np.testing.assert_array_equal(m, expected)
    # circular padding wraps the band around: a circulant matrix.
    c = conv_matrix(w[None, None], (1, 4), padding=1, padding_mode="circular").toarray()
    np.testing.assert_array_equal(c, [[-2, 3, 0, 1], [1, -2, 3, 0], [0, 1, -2, 3],
                                      [3, 0, 1, -2]])


@pytest.mark.parametrize("spatial, c_in, c_out, kernel, settings", [
    ((5,), 2, 3, (3,), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((4,), 4, 2, (2,), {"stride": 3, "dilation": 2, "groups": 2}),
    ((3, 4), 2, 2, (3, 2), {"stride": (2, 1), "padding": (1, 0), "output_padding": (1, 0)}),
])
def test_transposed_is_the_conv_transpose_and_the_adjoint(spatial, c_in, c_out, kernel,
                                                            settings):
    rng = np.random.default_rng(3)
    groups = settings.get("groups", 1)
    w = rng.standard_normal((c_in, c_out // groups, *kernel))
    x = rng.standard_normal((c_in, *spatial))
    m = conv_matrix(w, (c_in, *spatial), transposed=True, **settings)
    y = CONV_T[len(spatial)](x[None], w, **settings)[0]
    np.testing.assert_allclose(m @ x.ravel(), y.ravel(), rtol=1e-12, atol=1e-12)
    conv_settings = {k: v for k, v in settings.items() if k != "output_padding"}
    forward = conv_matrix(w, (c_out, *y.shape[1:]), **conv_settings)
    assert (forward.T != m).nnz == 0  # "the convolution's M.T for matching arguments"


def test_weight_sharing_and_sparsity_counts():
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    m = conv_matrix(w, (1, 8, 8))
    assert m.nnz == 36 * 9  # 6x6 outputs, 9 taps each, no padding
    assert set(np.unique(m.data)) == set(range(1, 10))


@pytest.mark.parametrize("call, error, message", [
    (lambda: conv_matrix(np.ones((2, 3)), (1, 4)), ValueError, "at least 3-D"),
    (lambda: conv_matrix(np.ones((1, 1, 3)), (1, 4, 4)), ValueError,
     "input_shape must be .C_in, .spatial. with 1 spatial"),
    (lambda: conv_matrix(np.ones((1, 1, 3)), (2, 4)), ValueError, "conv_matrix"),
    (lambda: conv_matrix(np.ones((1, 1, 3)), (1, 4), padding_mode="wrap"), ValueError,
     "padding_mode"),
    (lambda: conv_matrix(np.ones((1, 1, 3)), (1, 4), padding=1, padding_mode="circular",
                         transposed=True), ValueError, "zeros only"),
    (lambda: conv_matrix(np.ones((1, 1, 3)), (1, 4), output_padding=1), ValueError,
     "transposed=True only"),
    (lambda: conv_matrix(np.ones((1, 1, 3), np.float16), (1, 4)), TypeError, "float16"),
])
def test_bad_arguments_name_the_function(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_stats_count_sparsity_and_weight_sharing():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 1, 5, 5))
    s = conv_matrix_stats(w, (1, 28, 28), padding=2)
    assert s.shape == (6 * 28 * 28, 28 * 28)
    assert s.dense_params == 6 * 28 * 28 * 28 * 28 and s.weight_params == 150
    assert s.distinct_values == 150  # 3.7 million entries, 150 values: the shared weights
    # Each output reads 25 inputs, less the ones in the zero border: 28^2*25 - border.
    full_taps = np.convolve(np.ones(28), np.ones(5), mode="same")
    assert s.nonzeros == 6 * int(np.outer(full_taps, full_taps).sum())
    assert "nonzeros" in str(s)


def test_circular_convolution_eigenvalues_are_the_kernels_dft():
    w = np.array([[[0.5, -1.0, 2.0, 0.25]]])
    s = conv_matrix_stats(w, (1, 12), padding=((1, 2),), padding_mode="circular")
    assert s.dft_error < 1e-13
    # Independently of the DFT: the circulant's eigenvalues, by LAPACK.
    found = np.linalg.eigvals(conv_matrix(w, (1, 12), padding=((1, 2),),
                                          padding_mode="circular").toarray())
    lam = s.eigenvalues[0, 0]
    assert max(np.abs(found[:, None] - lam[None, :]).min(axis=1)) < 1e-12
    assert max(np.abs(lam[:, None] - found[None, :]).min(axis=1)) < 1e-12


def test_several_channels_are_block_diagonal_per_frequency():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 2, 3, 2))
    x = rng.standard_normal((4, 6, 5))
    settings = {"padding": "same", "padding_mode": "circular", "groups": 2,
                "dilation": (1, 2)}
    s = conv_matrix_stats(w, x.shape, **settings)
    assert s.dft_error < 1e-13
    # The convolution theorem per frequency, against the engine's own convolution.
    y = F.conv2d(x[None], w, **settings)[0]
    x_hat = np.fft.fftn(x, axes=(1, 2))
    y_hat = np.einsum("oixy,ixy->oxy", s.eigenvalues, x_hat)
    np.testing.assert_allclose(np.fft.ifftn(y_hat, axes=(1, 2)).real, y, atol=1e-12)


def test_zero_padding_and_strides_break_the_diagonal_form():
    w = np.random.default_rng(2).standard_normal((2, 2, 3, 3))
    assert conv_matrix_stats(w, (2, 6, 6), padding=1).dft_error > 0.05  # the border
    strided = conv_matrix_stats(w, (2, 6, 6), padding=1, padding_mode="circular", stride=2)
    assert strided.dft_error is None and "stride-1" in strided.dft_reason
    valid = conv_matrix_stats(w, (2, 6, 6))
    assert valid.dft_error is None and "grid" in valid.dft_reason
    # As many outputs as inputs, on another grid: (6, 5) -> (5, 6) is no circulant.
    swapped = conv_matrix_stats(np.ones((1, 1, 2, 2)), (1, 6, 5), padding=((0, 0), (1, 1)))
    assert swapped.dft_error is None and "(5, 6) differs" in swapped.dft_reason


def test_a_zero_output_padding_tuple_is_no_output_padding():
    assert conv_matrix(np.ones((1, 1, 3)), (1, 4), output_padding=(0,)).shape == (2, 4)


def test_zero_taps_and_cancelling_taps_are_no_entries():
    stats = conv_matrix_stats(np.array([[[1.0, 0.0, 2.0]]]), (1, 8), padding=1)
    assert stats.nonzeros == 14 and stats.distinct_values == 2  # 6 units x 2 taps + 2 x 1
    # circular padding on 2 samples: the two taps of [1, -1] land on one entry and cancel
    m = conv_matrix(np.array([[[1.0, 0.0, -1.0]]]), (1, 2), padding=1,
                    padding_mode="circular")
    assert m.nnz == 0 and not np.any(m.data == 0)
