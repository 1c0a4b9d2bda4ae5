"""The lecture's networks (``cnnlab.models``): shapes, parameter counts, and that they learn.

Each model is trained briefly on a small slice of a built-in dataset (or on a generated
task: WaveNet on delayed copies, U-Net on noisy shapes) and must clearly beat its
untrained self and chance. Step counts are small; the full recipes are benchmarked
separately.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from cnnlab import functional as F
from cnnlab.autograd import Tensor, no_grad
from cnnlab.data import ArrayDataset, available_datasets, load_dataset
from cnnlab.data.synthetic import delayed_copy, shapes_segmentation
from cnnlab.models import MNIST1DCNN, MODELS, LeNet1989, UNet, WaveNet, build_model
from cnnlab.train import Trainer, default_config, evaluate
from cnnlab.train.tasks import (
    segmentation_scores,
    train_unet_segmentation,
    train_wavenet_delay,
)

# Input shape (C, *spatial), output channels/classes and expected output shape per sample.
SHAPES = {
    "logistic": ((1, 40), 10, (10,)),
    "mlp": ((1, 40), 10, (10,)),
    "mnist1d-cnn": ((1, 40), 10, (10,)),
    "lenet1989": ((1, 16, 16), 10, (10,)),
    "digits-cnn": ((1, 8, 8), 10, (10,)),
    "lenet5": ((1, 28, 28), 10, (10,)),
    "vgg-small": ((3, 32, 32), 10, (10,)),
    "resnet-small": ((3, 32, 32), 10, (10,)),
    "wavenet": ((1, 50), 1, (1, 50)),
    "unet": ((1, 16, 16), 2, (2, 16, 16)),
}

READY = {name for name, _, ready, _ in available_datasets() if ready}


def _needs(data: str) -> None:
    if data not in READY:
        pytest.skip(f"dataset {data} is not available offline here")


def count(model) -> int:
    return sum(p.data.size for p in model.parameters())


# -- building -------------------------------------------------------------------------------


def test_every_registered_model_has_a_shape_case():
    assert set(SHAPES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_builds_and_gives_output_shape(name):
    input_shape, outputs, per_sample = SHAPES[name]
    rng = np.random.default_rng(0)
    model = build_model(name, rng, input_shape, outputs)
    x = rng.standard_normal((2, *input_shape)).astype(np.float32)
    out = model(Tensor(x))
    assert isinstance(out, Tensor)
    assert out.shape == (2, *per_sample)
    assert out.data.dtype == np.float32
    assert np.isfinite(out.data).all()
    # Every parameter receives a gradient: nothing is disconnected or dead.
    (out * out).sum().backward()
    for key, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, key


def test_build_model_is_deterministic_in_rng():
    a = build_model("mnist1d-cnn", np.random.default_rng(3), (1, 40), 10).state_dict()
    b = build_model("mnist1d-cnn", np.random.default_rng(3), (1, 40), 10).state_dict()
    c = build_model("mnist1d-cnn", np.random.default_rng(4), (1, 40), 10).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match=r"build_model: model must be one of .*got 'nope'"):
        build_model("nope", np.random.default_rng(0), (1, 40), 10)


def test_lenet1989_has_9760_parameters():
    # LeCun et al. 1989, "Backpropagation applied to handwritten zip code recognition":
    # H1 12x(5x5) shared kernels + 768 biases = 1,068; H2 12x(8x5x5) + 192 biases = 2,592;
    # H3 30x(192+1) = 5,790; output 10x(30+1) = 310. Total 9,760.
    model = LeNet1989(np.random.default_rng(0))
    assert count(model) == 9760
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert shapes == {
        "h1_bias": (12, 8, 8), "h2_bias": (12, 4, 4), "h1.weight": (12, 1, 5, 5),
        "h2.0.weight": (4, 8, 5, 5), "h2.1.weight": (4, 8, 5, 5), "h2.2.weight": (4, 8, 5, 5),
        "h3.weight": (30, 192), "h3.bias": (30,), "out.weight": (10, 30), "out.bias": (10,),
    }


def test_lenet5_pools_before_relu_and_is_the_usual_order_exactly():
    # maxpool(relu(x)) == relu(maxpool(x)), gradients included: the window's gradient goes
    # to the same first maximum, or nowhere when the maximum is <= 0. Inputs shifted down
    # so that many windows are entirely negative, and rounded so that ties occur.
    from cnnlab import nn

    model = build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds[:6] == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    layers = list(model)
    usual = nn.Sequential(layers[0], layers[2], layers[1], layers[3], layers[5], layers[4],
                          *layers[6:])
    assert list(usual.state_dict()) == list(model.state_dict())
    # The two orders themselves, module by module: conv + pool as one op (Sequential's
    # fusion) rounds differently and is checked against the two ops in tests/nn.
    model.fuse_conv_pool = False
    x = np.round(np.random.default_rng(1).standard_normal((8, 1, 28, 28)) * 2) - 1.5
    outputs, grads = [], []
    for net in (model, usual):
        for p in net.parameters():
            p.grad = None
        logits = net(Tensor(x.astype(np.float32)))
        F.cross_entropy(logits, np.arange(8) % 10).backward()
        outputs.append(logits.data)
        grads.append([p.grad for p in net.parameters()])
    assert np.array_equal(outputs[0], outputs[1])
    for ours, theirs in zip(grads[0], grads[1], strict=True):
        assert np.array_equal(ours, theirs)


def test_mnist1d_cnn_has_the_papers_layer_sizes():
    # Greydanus 2020 (MNIST-1D): conv(1->25, k5, s2, p1) -> conv(25->25, k3, s2, p1) ->
    # conv(25->25, k3, s2, p1) -> linear(125 -> 10); sequence 40 -> 19 -> 10 -> 5.
    model = MNIST1DCNN(np.random.default_rng(0))
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert shapes == {
        "conv1.weight": (25, 1, 5), "conv1.bias": (25,),
        "conv2.weight": (25, 25, 3), "conv2.bias": (25,),
        "conv3.weight": (25, 25, 3), "conv3.bias": (25,),
        "linear.weight": (10, 125), "linear.bias": (10,),
    }
    for conv in (model.conv1, model.conv2, model.conv3):
        assert conv.stride == (2,) and conv.padding == (1,)
    h = np.zeros((1, 1, 40), np.float32)
    lengths = []
    for conv in (model.conv1, model.conv2, model.conv3):
        h = conv(h)
        lengths.append(h.shape[-1])
    assert lengths == [19, 10, 5]
    assert count(model) == 5210


# -- learning on real data ------------------------------------------------------------------


@cache
def _splits(data: str, n_train: int, n_test: int, upsample: int = 1
            ) -> tuple[ArrayDataset, ArrayDataset]:
    train, test = load_dataset(data)

    def cut(ds: ArrayDataset, n: int) -> ArrayDataset:
        x = ds.x[:n]
        if upsample > 1:  # nearest-neighbour upsampling: 8x8 digits -> 16x16
            x = np.kron(x, np.ones((upsample, upsample), np.float32))
        return ArrayDataset(x, ds.y[:n])

    return cut(train, n_train), cut(test, n_test)


# (data, model, train/test slice, upsample, steps, batch, lr, least test accuracy)
LEARNING = [
    ("mnist1d", "mnist1d-cnn", 4000, 500, 1, 60, 100, 1e-2, 0.30),
    ("mnist1d", "mlp", 4000, 500, 1, 60, 100, 1e-2, 0.30),
    ("mnist1d", "logistic", 4000, 500, 1, 200, 100, 1e-2, 0.25),
    ("digits", "digits-cnn", 1437, 360, 1, 60, 64, 3e-3, 0.60),
    ("mnist5k", "lenet5", 2000, 300, 1, 40, 64, 3e-3, 0.50),
    ("mnist5k", "lenet1989", 2000, 300, 1, 100, 32, 3e-3, 0.50),
    ("digits", "vgg-small", 512, 200, 2, 30, 32, 3e-3, 0.40),
    ("digits", "resnet-small", 512, 200, 2, 30, 32, 3e-3, 0.30),
]


@pytest.mark.parametrize(
    ("data", "model", "n_train", "n_test", "upsample", "steps", "batch", "lr", "least"),
    LEARNING, ids=[f"{row[1]}-{row[0]}" for row in LEARNING])
def test_classifier_learns(data, model, n_train, n_test, upsample, steps, batch, lr, least):
    _needs(data)
    splits = _splits(data, n_train, n_test, upsample)
    config = default_config(data, model, steps=steps, batch_size=batch, lr=lr,
                            progress=False)
    trainer = Trainer(config, datasets=splits)
    loss_before, accuracy_before = evaluate(trainer.model, trainer.x_test, trainer.y_test)
    metrics = trainer.run().metrics
    assert loss_before > 0.8 * math.log(10)  # an untrained net is near chance
    assert metrics["test_loss"] < loss_before - 0.4  # nats: a clear drop for every model
    assert metrics["test_accuracy"] >= least >= 2 * 0.1  # chance is 10%
    assert metrics["test_accuracy"] > accuracy_before + 0.1


# -- WaveNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kernel_size", "layers"), [(2, 4), (3, 3), (2, 6)])
def test_wavenet_is_causal_and_receptive_field_matches_formula(kernel_size, layers):
    model = WaveNet(np.random.default_rng(0), channels=8, kernel_size=kernel_size,
                    layers=layers).to(np.float64)
    expected = 1 + (kernel_size - 1) * sum(2**i for i in range(layers))
    assert model.receptive_field == expected
    length, t0 = 100, 20
    x = np.random.default_rng(1).standard_normal((1, 1, length))
    moved = x.copy()
    moved[..., t0] += 1.0
    with no_grad():
        change = np.abs(model(Tensor(moved)).data - model(Tensor(x)).data)[0, 0]
    tol = 1e-10  # float64: exact up to rounding whatever the convolution algorithm
    assert change[:t0].max() <= tol, "an output before t0 depends on input t0"
    assert change[t0] > 1e-4, "output t0 does not see input t0"
    affected = np.flatnonzero(change > tol)
    # Input t0 reaches outputs t0 .. t0 + RF - 1 and no further.
    assert affected.min() == t0
    assert affected.max() == t0 + expected - 1


def test_wavenet_output_sees_exactly_its_receptive_field_by_gradient():
    model = WaveNet(np.random.default_rng(2), channels=4, kernel_size=2, layers=3)
    model.to(np.float64)
    x = Tensor(np.random.default_rng(3).standard_normal((1, 1, 30)), requires_grad=True)
    out = model(x)
    t = 20
    out[:, :, t].sum().backward()
    grad = np.abs(x.grad[0, 0])
    seen = np.flatnonzero(grad > 1e-10 * grad.max())
    assert seen.max() == t
    assert seen.min() == t - model.receptive_field + 1


def test_delayed_copy_data():
    x, y = delayed_copy(3, 12, 4, np.random.default_rng(0))
    assert x.shape == y.shape == (3, 1, 12) and x.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(y[..., 4:], x[..., :8])
    np.testing.assert_array_equal(y[..., :4], 0)
    again, _ = delayed_copy(3, 12, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(x, again)
    _, y0 = delayed_copy(2, 5, 0, np.random.default_rng(1))
    assert np.abs(y0).sum() > 0
    _, late = delayed_copy(2, 5, 9, np.random.default_rng(1))
    np.testing.assert_array_equal(late, 0)
    with pytest.raises(ValueError, match=r"delayed_copy: delay must be >= 0, got -1"):
        delayed_copy(2, 5, -1, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"delayed_copy: rng must be a numpy.random.Generator"):
        delayed_copy(2, 5, 1, 0)


def test_wavenet_learns_delayed_copy_when_receptive_field_exceeds_delay():
    solved = train_wavenet_delay(steps=150, delay=6, layers=4, seed=0)  # RF 16 > 6
    assert solved["receptive_field"] == 16 and solved["solvable"]
    assert solved["mse_after"] < solved["mse_before"] / 5
    assert solved["mse_after"] < 0.1


def test_wavenet_cannot_learn_delay_beyond_its_receptive_field():
    # RF 4 <= delay 6: output t never sees x[t - 6], which is independent of what it does
    # see, so the best prediction is 0 and the error stays near var(y) ~ 1.
    blind = train_wavenet_delay(steps=60, delay=6, layers=2, seed=0)
    assert blind["receptive_field"] == 4 and not blind["solvable"]
    assert blind["mse_after"] > 0.6


# -- U-Net ------------------------------------------------------------------------------------


def test_shapes_segmentation_data():
    images, masks = shapes_segmentation(32, 16, np.random.default_rng(0))
    assert images.shape == masks.shape == (32, 1, 16, 16)
    assert images.dtype == masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert (masks.reshape(32, -1).sum(axis=1) > 0).all()  # every image has a shape
    # Shapes are bright (0.6..1) on a dark background, under unit-scale noise.
    inside, outside = images[masks == 1].mean(), images[masks == 0].mean()
    assert 0.6 <= inside <= 1.0 and abs(outside) < 0.1
    clean, clean_masks = shapes_segmentation(4, 8, np.random.default_rng(1), noise=0.0)
    assert ((clean > 0) == (clean_masks > 0)).all()
    with pytest.raises(ValueError, match=r"shapes_segmentation: size must be >= 4, got 2"):
        shapes_segmentation(1, 2, np.random.default_rng(0))


def test_segmentation_scores():
    masks = np.zeros((1, 1, 2, 2), np.float32)
    masks[..., 0, :] = 1
    logits = np.array([[[[5.0, -1.0], [2.0, -3.0]]]])
    iou, accuracy = segmentation_scores(logits, masks)
    assert iou == pytest.approx(1 / 3) and accuracy == pytest.approx(0.5)


def test_unet_output_keeps_input_size():
    model = UNet(np.random.default_rng(0), in_channels=2, out_channels=3, base=4, depth=3)
    assert model(Tensor(np.zeros((1, 2, 24, 16), np.float32))).shape == (1, 3, 24, 16)


def test_unet_learns_segmentation():
    result = train_unet_segmentation(steps=100, seed=0)
    trivial = result["iou_all_foreground"]  # predict every pixel foreground
    assert 0.05 < trivial < 0.5
    assert result["iou_after"] > max(0.5, 2 * trivial)
    assert result["iou_after"] > result["iou_before"] + 0.3
    assert result["pixel_accuracy"] > 1 - result["foreground_fraction"]  # beats all-background


def test_generated_tasks_are_reproducible():
    a = train_wavenet_delay(steps=3, delay=2, layers=2, seed=5)
    b = train_wavenet_delay(steps=3, delay=2, layers=2, rng=np.random.default_rng(5))
    assert a == b
    with pytest.raises(ValueError, match=r"train_unet_segmentation: size \(10\) must be "
                                         r"divisible by 2\*\*depth \(4\)"):
        train_unet_segmentation(steps=1, size=10)
    with pytest.raises(ValueError, match=r"train_wavenet_delay: steps must be >= 0, got -1"):
        train_wavenet_delay(steps=-1)
    with pytest.raises(TypeError, match=r"train_wavenet_delay: rng must be a numpy"):
        train_wavenet_delay(steps=1, rng=1)


def test_binary_cross_entropy_drives_unet_logits():
    # One step of the U-Net task's loss: finite, and its gradient reaches the first layer.
    model = UNet(np.random.default_rng(0), base=4, depth=1)
    images, masks = shapes_segmentation(2, 8, np.random.default_rng(1))
    loss = F.binary_cross_entropy_with_logits(model(Tensor(images)), masks)
    loss.backward()
    assert np.isfinite(float(loss.data))
    assert np.abs(model.down[0][0].weight.grad).sum() > 0
