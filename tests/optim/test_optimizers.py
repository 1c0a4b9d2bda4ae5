"""SGD, Adam and AdamW against torch.optim (float64, 20 steps, 1e-12), plus state dicts."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from cnnlab import Tensor, optim

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (5,), (2, 3, 3)]
STEPS = 20
RTOL, ATOL = 1e-12, 1e-14


def make_problem(seed: int, dtype: type = np.float64, steps: int = STEPS, skip: bool = True
                 ) -> tuple[list[np.ndarray], list[list[np.ndarray | None]]]:
    """Initial parameters and a gradient sequence; with ``skip``, parameter 1 has no grad
    at step 3 (so Adam's per-parameter step counts differ afterwards)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    grads: list[list[np.ndarray | None]] = [
        [rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(steps)
    ]
    if skip:
        grads[3][1] = None
    return params, grads


def grouped(tensors: list, group_options: dict | None) -> list:
    """All tensors in one group, or the last one in a second group with its own options."""
    if group_options is None:
        return list(tensors)
    return [{"params": tensors[:2]}, {"params": tensors[2:], **group_options}]


def set_grads(ours: list[Tensor], theirs: list, grads: list[np.ndarray | None]) -> None:
    for mine, their, grad in zip(ours, theirs, grads, strict=True):
        mine.grad = None if grad is None else grad.copy()
        their.grad = None if grad is None else torch.from_numpy(grad.copy())


def check_against_torch(name: str, kwargs: dict, group_options: dict | None,
                        dtype: type = np.float64, steps: int = STEPS, rtol: float = RTOL,
                        atol: float = ATOL, skip: bool = True
                        ) -> tuple[optim.Optimizer, object]:
    """Step cnnlab's and torch's optimizer side by side, comparing parameters every step."""
    params, grads = make_problem(seed=len(name) + len(kwargs), dtype=dtype, steps=steps,
                                 skip=skip)
    ours = [Tensor(p.copy()) for p in params]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    optimizer = getattr(optim, name)(grouped(ours, group_options), **kwargs)
    reference = getattr(torch.optim, name)(grouped(theirs, group_options), **kwargs)
    arrays = [t.data for t in ours]
    for step, step_grads in enumerate(grads[:steps]):
        set_grads(ours, theirs, step_grads)
        optimizer.step()
        reference.step()
        for i, (mine, their) in enumerate(zip(ours, theirs, strict=True)):
            np.testing.assert_allclose(mine.data, their.detach().numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"{name} {kwargs} step {step} param {i}")
    for mine, array in zip(ours, arrays, strict=True):
        assert mine.data is array, "the update must happen in place"
        assert mine.data.dtype == dtype
    return optimizer, reference


SGD_CASES = [
    ({"lr": 0.1}, None),
    ({"lr": 0.1, "momentum": 0.9}, None),
    ({"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, None),
    ({"lr": 0.1, "momentum": 0.9, "nesterov": True}, None),
    ({"lr": 0.1, "weight_decay": 0.1}, None),
    ({"lr": 0.1, "maximize": True}, None),
    ({"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01, "maximize": True},
     None),
    ({"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.2}),
    ({}, None),
]

ADAM_CASES = [
    ({"lr": 0.01}, None),
    ({"lr": 0.01, "amsgrad": True}, None),
    ({"lr": 0.01, "weight_decay": 0.1}, None),
    ({"lr": 0.01, "maximize": True}, None),
    ({"lr": 0.01, "betas": (0.3, 0.6), "eps": 1e-3}, None),  # lerp's weight >= 0.5 branch
    ({"lr": 0.01, "amsgrad": True, "weight_decay": 0.05, "maximize": True}, None),
    ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, None),
    ({"lr": 0.01}, {"lr": 0.1, "betas": (0.5, 0.9), "amsgrad": True}),
    ({}, None),
]

ADAMW_CASES = [
    ({"lr": 0.01}, None),
    ({"lr": 0.01, "weight_decay": 0.3}, None),
    ({"lr": 0.01, "amsgrad": True}, None),
    ({"lr": 0.01, "maximize": True, "weight_decay": 0.0}, None),
    ({"lr": 0.01}, {"lr": 0.001, "weight_decay": 0.5}),
]

ALL_CASES = ([("SGD", *case) for case in SGD_CASES] + [("Adam", *case) for case in ADAM_CASES]
             + [("AdamW", *case) for case in ADAMW_CASES])


@pytest.mark.parametrize("skip", [False, True], ids=["all-grads", "a-grad-missing"])
@pytest.mark.parametrize(("name", "kwargs", "group_options"), ALL_CASES)
def test_matches_torch_float64(name: str, kwargs: dict, group_options: dict | None,
                               skip: bool) -> None:
    optimizer, reference = check_against_torch(name, kwargs, group_options, skip=skip)
    # The per-parameter state matches too.
    for group, their_group in zip(optimizer.param_groups, reference.param_groups, strict=True):
        for param, their_param in zip(group["params"], their_group["params"], strict=True):
            their_state = reference.state[their_param]
            for key, value in optimizer.state.get(id(param), {}).items():
                expected = their_state[key]
                expected = expected.item() if expected.ndim == 0 else expected.numpy()
                np.testing.assert_allclose(value, expected, rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_float32_stays_float32(name: str) -> None:
    kwargs = {"lr": 0.01, "weight_decay": 0.1, "maximize": True}
    kwargs.update({"momentum": 0.9, "nesterov": True} if name == "SGD" else {"amsgrad": True})
    optimizer, _ = check_against_torch(name, kwargs, None, dtype=np.float32, steps=5,
                                       rtol=1e-5, atol=1e-6)
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32, key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_flat_step_equals_per_parameter_step(name: str, dtype: type, monkeypatch) -> None:
    """Adam's one-call-per-group step is bitwise the per-parameter step."""
    params, grads = make_problem(seed=3, dtype=dtype, skip=False)
    kwargs = {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True}

    def run() -> list[np.ndarray]:
        tensors = [Tensor(p.copy()) for p in params]
        optimizer = getattr(optim, name)(grouped(tensors, {"lr": 0.1}), **kwargs)
        for step_grads in grads:
            for tensor, grad in zip(tensors, step_grads, strict=True):
                tensor.grad = grad.copy()
            optimizer.step()
        return [t.data for t in tensors]

    flat = run()
    monkeypatch.setattr(optim.adam._FlatState, "can_step", lambda *args: False)
    for mine, expected in zip(run(), flat, strict=True):
        np.testing.assert_array_equal(mine, expected)


def test_adam_mixed_dtypes_in_one_group() -> None:
    params, grads = make_problem(seed=4, steps=5, skip=False)
    params[1] = params[1].astype(np.float32)
    ours = [Tensor(p.copy()) for p in params]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    optimizer = optim.Adam(ours, lr=0.01, amsgrad=True)
    reference = torch.optim.Adam(theirs, lr=0.01, amsgrad=True)
    for step_grads in grads:
        cast = [g.astype(p.dtype) for g, p in zip(step_grads, params, strict=True)]
        set_grads(ours, theirs, cast)
        optimizer.step()
        reference.step()
    for mine, their in zip(ours, theirs, strict=True):
        assert mine.dtype == their.detach().numpy().dtype
        np.testing.assert_allclose(mine.data, their.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_step_leaves_grads_untouched(name: str) -> None:
    params, grads = make_problem(seed=1)
    tensors = [Tensor(p) for p in params]
    kwargs = {"momentum": 0.9} if name == "SGD" else {"amsgrad": True}
    optimizer = getattr(optim, name)(tensors, lr=0.1, weight_decay=0.1, maximize=True,
                                     **kwargs)
    for step_grads in grads[:3]:
        for tensor, grad in zip(tensors, step_grads, strict=True):
            tensor.grad = None if grad is None else grad.copy()
        optimizer.step()
        for tensor, grad in zip(tensors, step_grads, strict=True):
            if grad is not None:
                np.testing.assert_array_equal(tensor.grad, grad)


def test_zero_grad() -> None:
    tensors = [Tensor(np.ones(3)), Tensor(np.ones(2))]
    optimizer = optim.SGD(tensors, lr=0.1)
    for tensor in tensors:
        tensor.grad = np.ones_like(tensor.data)
    grad = tensors[0].grad
    optimizer.zero_grad(set_to_none=False)
    assert tensors[0].grad is grad
    np.testing.assert_array_equal(grad, 0.0)
    optimizer.zero_grad()
    assert all(tensor.grad is None for tensor in tensors)


def test_step_returns_closure_loss() -> None:
    tensor = Tensor(np.array([1.0]))
    optimizer = optim.SGD([tensor], lr=0.5)

    def closure() -> float:
        tensor.grad = np.array([2.0])
        return 7.0

    assert optimizer.step(closure) == 7.0
    np.testing.assert_array_equal(tensor.data, [0.0])


def test_grad_shape_mismatch_is_an_error() -> None:
    tensor = Tensor(np.zeros((2, 3)))
    tensor.grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"Adam.step: param_groups\[0\]\['params'\]\[0\]"):
        optim.Adam([tensor]).step()


# ---------------------------------------------------------------------------------------
# State dicts: flat, pickle-free, bitwise resume.

RESUME_CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, None),
    ("Adam", {"lr": 0.01, "amsgrad": True}, {"lr": 0.1, "betas": (0.5, 0.9)}),
    ("AdamW", {"lr": 0.01, "maximize": True}, None),
]


def npz_round_trip(state_dict: dict) -> dict:
    buffer = io.BytesIO()
    np.savez(buffer, **state_dict)
    buffer.seek(0)
    with np.load(buffer) as archive:
        return dict(archive)


def safetensors_round_trip(state_dict: dict) -> dict:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {key: np.asarray(value) for key, value in state_dict.items()}
    return safetensors_numpy.load(safetensors_numpy.save(arrays))


@pytest.mark.parametrize("round_trip", [dict, npz_round_trip, safetensors_round_trip])
@pytest.mark.parametrize(("name", "kwargs", "group_options"), RESUME_CASES)
def test_state_dict_resume_is_bitwise(name: str, kwargs: dict, group_options: dict | None,
                                      round_trip) -> None:
    params, grads = make_problem(seed=2)
    half = STEPS // 2

    def run(tensors: list[Tensor], optimizer: optim.Optimizer, steps: list) -> None:
        for step_grads in steps:
            for tensor, grad in zip(tensors, step_grads, strict=True):
                tensor.grad = None if grad is None else grad.copy()
            optimizer.step()

    straight = [Tensor(p.copy()) for p in params]
    run(straight, getattr(optim, name)(grouped(straight, group_options), **kwargs), grads)

    first = [Tensor(p.copy()) for p in params]
    first_optimizer = getattr(optim, name)(grouped(first, group_options), **kwargs)
    run(first, first_optimizer, grads[:half])
    saved = first_optimizer.state_dict()
    assert all(isinstance(value, (np.ndarray, int, float)) for value in saved.values())
    assert all(isinstance(key, str) for key in saved)

    resumed = [Tensor(t.data.copy()) for t in first]
    defaults = {"lr": 123.0}  # overwritten by the loaded hyperparameters
    optimizer = getattr(optim, name)(grouped(resumed, group_options), **{**kwargs, **defaults})
    optimizer.load_state_dict(round_trip(saved))
    run(resumed, optimizer, grads[half:])
    for mine, expected in zip(resumed, straight, strict=True):
        np.testing.assert_array_equal(mine.data, expected.data)
    # Saving copied the arrays: the interrupted optimizer continues unaffected.
    run(first, first_optimizer, grads[half:])
    for mine, expected in zip(first, straight, strict=True):
        np.testing.assert_array_equal(mine.data, expected.data)


def test_state_dict_layout() -> None:
    tensors = [Tensor(np.zeros((2, 2))), Tensor(np.zeros(3))]
    optimizer = optim.Adam([{"params": tensors[:1]}, {"params": tensors[1:], "lr": 0.1}])
    tensors[1].grad = np.ones(3)
    optimizer.step()
    saved = optimizer.state_dict()
    assert saved["group.0.lr"] == 1e-3 and saved["group.1.lr"] == 0.1
    np.testing.assert_array_equal(saved["group.1.params"], [1])
    np.testing.assert_array_equal(saved["group.0.betas"], [0.9, 0.999])
    assert saved["group.0.amsgrad"] == 0 and saved["state.1.step"] == 1
    assert sorted(k for k in saved if k.startswith("state.")) == [
        "state.1.exp_avg", "state.1.exp_avg_sq", "state.1.step"]


def adam_state_dict() -> tuple[optim.Adam, dict]:
    tensors = [Tensor(np.zeros((2, 3))), Tensor(np.zeros(4))]
    optimizer = optim.Adam(tensors, amsgrad=True)
    for tensor in tensors:
        tensor.grad = np.ones_like(tensor.data)
    optimizer.step()
    return optimizer, optimizer.state_dict()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda sd: sd.update({"state.0.exp_avg": np.zeros((3, 2))}),
     r"'state.0.exp_avg' has shape \(3, 2\), but parameter 0 has shape \(2, 3\)"),
    (lambda sd: sd.update({"state.5.exp_avg": np.zeros(4)}), r"'state.5.exp_avg' names param"),
    (lambda sd: sd.update({"state.1.velocity": np.zeros(4)}), r"unknown state 'state.1.veloc"),
    (lambda sd: sd.update({"group.1.lr": 0.1}), r"'group.1.lr' names param group 1"),
    (lambda sd: sd.update({"momentum": 0.9}), r"unexpected key 'momentum'"),
    (lambda sd: sd.update({"group.0.params": np.arange(3)}), r"'group.0.params' lists 3"),
    (lambda sd: sd.update({"group.0.betas": np.zeros(3)}), r"'group.0.betas' has shape \(3,\)"),
    (lambda sd: sd.update({"group.0.lr": -1.0}), r"lr must be >= 0, got -1.0"),
    (lambda sd: sd.update({"state.0.step": 1.5}), r"'state.0.step' must be an integer"),
    (lambda sd: sd.pop("group.0.eps"), r"missing key\(s\) \['group.0.eps'\]"),
    (lambda sd: sd.pop("state.1.max_exp_avg_sq"), r"missing \['state.1.max_exp_avg_sq'\]"),
])
def test_load_state_dict_errors(edit, match: str) -> None:
    optimizer, saved = adam_state_dict()
    before = optimizer.state_dict()
    edit(saved)
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: .*" + match):
        optimizer.load_state_dict(saved)
    # Nothing changed: loading validates everything first.
    after = optimizer.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value)


def test_load_state_dict_casts_to_param_dtype() -> None:
    tensor = Tensor(np.zeros(3, dtype=np.float32))
    optimizer = optim.SGD([tensor], lr=0.1, momentum=0.9)
    saved = optimizer.state_dict()
    saved["state.0.momentum_buffer"] = np.ones(3)  # float64 from a file
    optimizer.load_state_dict(saved)
    assert optimizer.state[id(tensor)]["momentum_buffer"].dtype == np.float32


# ---------------------------------------------------------------------------------------
# Hyperparameter and argument validation.

def one_param() -> list[Tensor]:
    return [Tensor(np.zeros(3))]


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("SGD", {"lr": -0.1}, r"SGD: lr must be >= 0, got -0.1"),
    ("SGD", {"lr": math.nan}, r"SGD: lr must be >= 0, got nan"),
    ("SGD", {"momentum": -0.5}, r"SGD: momentum must be >= 0, got -0.5"),
    ("SGD", {"weight_decay": -1}, r"SGD: weight_decay must be >= 0, got -1"),
    ("SGD", {"nesterov": True}, r"SGD: nesterov=True requires momentum > 0 and dampening == 0"),
    ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, r"dampening=0.1"),
    ("Adam", {"lr": -1e-3}, r"Adam: lr must be >= 0, got -0.001"),
    ("Adam", {"betas": (1.0, 0.999)}, r"Adam: betas\[0\] must be in \[0, 1\), got 1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, r"Adam: betas\[1\] must be in \[0, 1\), got -0.1"),
    ("Adam", {"eps": -1e-8}, r"Adam: eps must be >= 0, got -1e-08"),
    ("Adam", {"weight_decay": -0.1}, r"Adam: weight_decay must be >= 0, got -0.1"),
    ("AdamW", {"betas": (0.9, 1.5)}, r"AdamW: betas\[1\] must be in \[0, 1\), got 1.5"),
    ("AdamW", {"weight_decay": -0.01}, r"AdamW: weight_decay must be >= 0, got -0.01"),
])
def test_bad_hyperparameters(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        getattr(optim, name)(one_param(), **kwargs)
    # torch rejects them too, except a NaN lr (its check is ``lr < 0``).
    if any(isinstance(v, float) and math.isnan(v) for v in kwargs.values()):
        return
    with pytest.raises(ValueError):
        getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: optim.SGD(one_param(), lr="0.1"), TypeError, r"SGD: lr must be a real number"),
    (lambda: optim.SGD(one_param(), nesterov=1), TypeError, r"SGD: nesterov must be a bool"),
    (lambda: optim.Adam(one_param(), betas=0.9), TypeError, r"Adam: betas must be a pair"),
    (lambda: optim.SGD([], lr=0.1), ValueError, r"SGD: got an empty parameter list"),
    (lambda: optim.SGD(set(one_param())), TypeError, r"ordered iterable \(list\), got a set"),
    (lambda: optim.SGD(Tensor(np.zeros(2))), TypeError, r"got a single Tensor"),
    (lambda: optim.SGD([np.zeros(3)]), TypeError,
     r"SGD param_groups\[0\]: params\[0\] must be a cnnlab Tensor, got ndarray"),
    (lambda: optim.SGD([{"params": one_param(), "lr": -1.0}]), ValueError,
     r"SGD param_groups\[0\]: lr must be >= 0, got -1.0"),
    (lambda: optim.Adam([{"params": one_param(), "learning_rate": 0.1}]), ValueError,
     r"Adam param_groups\[0\]: unknown option\(s\) \['learning_rate'\]"),
    (lambda: optim.SGD([{"lr": 0.1}]), ValueError, r"needs a 'params' entry"),
])
def test_bad_arguments(make, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_parameter_in_two_groups() -> None:
    shared = Tensor(np.zeros(2))
    with pytest.raises(ValueError, match=r"param_groups\[1\]: some parameters appear in more"):
        optim.SGD([{"params": [shared]}, {"params": [shared]}])
    with pytest.raises(ValueError, match=r"more than once in the group"):
        optim.SGD([shared, shared])


def test_add_param_group_and_repr() -> None:
    optimizer = optim.SGD(one_param(), lr=0.1)
    optimizer.add_param_group({"params": one_param(), "momentum": 0.9})
    assert optimizer.param_groups[1]["lr"] == 0.1
    assert optimizer.param_groups[1]["momentum"] == 0.9
    assert "Parameter Group 1" in repr(optimizer)


@pytest.mark.parametrize(("name", "kwargs"), [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                              ("Adam", {"lr": 0.1}), ("AdamW", {"lr": 0.1})])
def test_fits_least_squares_through_autograd(name: str, kwargs: dict) -> None:
    rng = np.random.default_rng(5)
    inputs = rng.standard_normal((64, 3))
    targets = inputs @ np.array([1.5, -2.0, 0.5]) + 0.3
    weight = Tensor(np.zeros(3), requires_grad=True)
    bias = Tensor(np.zeros(1), requires_grad=True)
    optimizer = getattr(optim, name)([weight, bias], **kwargs)
    losses = []
    for _ in range(200):
        optimizer.zero_grad()
        residual = Tensor(inputs) @ weight + bias - targets
        loss = (residual * residual).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]
