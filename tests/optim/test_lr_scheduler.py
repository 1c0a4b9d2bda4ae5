"""StepLR, CosineAnnealingLR and OneCycleLR against torch.optim.lr_scheduler, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab import Tensor, optim
from cnnlab.optim import lr_scheduler

torch = pytest.importorskip("torch")

STEPS = 60


def two_groups(module, tensor_type, name: str) -> object:
    """An optimizer of ``module`` with two groups of different learning rates."""
    first, second = tensor_type(np.zeros(2)), tensor_type(np.zeros(3))
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    return getattr(module, name)([{"params": [first]}, {"params": [second], "lr": 0.01}],
                                 lr=0.1, **kwargs)


def torch_tensor(array: np.ndarray) -> object:
    return torch.tensor(array, requires_grad=True)


def momentum_of(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


CASES = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}),
    ("StepLR", {"step_size": 3}),
    ("CosineAnnealingLR", {"T_max": 20}),
    ("CosineAnnealingLR", {"T_max": 25, "eta_min": 1e-3}),
    ("CosineAnnealingLR", {"T_max": 1}),
    ("OneCycleLR", {"max_lr": 0.1, "total_steps": STEPS}),
    ("OneCycleLR", {"max_lr": [0.1, 0.05], "epochs": 6, "steps_per_epoch": 10,
                    "anneal_strategy": "linear", "three_phase": True}),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": STEPS, "pct_start": 0.25, "div_factor": 10.0,
                    "final_div_factor": 100.0, "cycle_momentum": False}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": STEPS, "base_momentum": [0.8, 0.7],
                    "max_momentum": 0.9, "three_phase": True}),
]


@pytest.mark.parametrize("optimizer_name", ["SGD", "Adam"])
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch(name: str, kwargs: dict, optimizer_name: str) -> None:
    optimizer = two_groups(optim, Tensor, optimizer_name)
    reference = two_groups(torch.optim, torch_tensor, optimizer_name)
    scheduler = getattr(lr_scheduler, name)(optimizer, **kwargs)
    their_scheduler = getattr(torch.optim.lr_scheduler, name)(reference, **kwargs)
    for step in range(STEPS + 1):
        # Exact equality: the same float operations in the same order.
        assert scheduler.get_last_lr() == their_scheduler.get_last_lr(), f"step {step}"
        for group, their_group in zip(optimizer.param_groups, reference.param_groups,
                                      strict=True):
            assert group["lr"] == their_group["lr"]
            assert momentum_of(group) == momentum_of(their_group), f"step {step}"
        if step < STEPS:
            reference.step()  # keeps torch's "scheduler before optimizer" warning quiet
            scheduler.step()
            their_scheduler.step()


def test_cosine_recursion_close_to_closed_form() -> None:
    base_lr, eta_min, T_max = 0.1, 1e-3, 50
    scheduler = lr_scheduler.CosineAnnealingLR(optim.SGD([Tensor(np.zeros(1))], lr=base_lr),
                                               T_max=T_max, eta_min=eta_min)
    for t in range(1, 2 * T_max + 1):
        scheduler.step()
        closed = eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
        assert scheduler.get_last_lr()[0] == pytest.approx(closed, rel=1e-12, abs=1e-16)


def sgd_with(scheduler_name: str, tensor: Tensor, **kwargs):
    optimizer = optim.SGD([tensor], lr=0.1, momentum=0.5)
    return optimizer, getattr(lr_scheduler, scheduler_name)(optimizer, **kwargs)


RESUME_CASES = [
    ("StepLR", {"step_size": 4, "gamma": 0.7}),
    ("CosineAnnealingLR", {"T_max": 15, "eta_min": 1e-4}),
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": 30, "three_phase": True}),
]


@pytest.mark.parametrize("load_optimizer_first", [False, True])
@pytest.mark.parametrize(("name", "kwargs"), RESUME_CASES)
def test_resume_from_state_dicts_is_bitwise(name: str, kwargs: dict,
                                            load_optimizer_first: bool) -> None:
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(3) for _ in range(30)]

    def run(tensor, optimizer, scheduler, steps) -> list[float]:
        lrs = []
        for grad in steps:
            tensor.grad = grad.copy()
            optimizer.step()
            scheduler.step()
            lrs.append(scheduler.get_last_lr()[0])
        return lrs

    straight = Tensor(np.ones(3))
    expected = run(straight, *sgd_with(name, straight, **kwargs), grads)

    first = Tensor(np.ones(3))
    first_optimizer, first_scheduler = sgd_with(name, first, **kwargs)
    lrs = run(first, first_optimizer, first_scheduler, grads[:12])
    saved_optimizer = first_optimizer.state_dict()
    saved_scheduler = first_scheduler.state_dict()
    assert all(isinstance(v, (int, float)) for v in saved_scheduler.values())

    resumed = Tensor(first.data.copy())
    if load_optimizer_first:  # the scheduler's constructor then overwrites lr and momentum
        optimizer = optim.SGD([resumed], lr=0.1, momentum=0.5)
        optimizer.load_state_dict(saved_optimizer)
        scheduler = getattr(lr_scheduler, name)(optimizer, **kwargs)
    else:
        optimizer, scheduler = sgd_with(name, resumed, **kwargs)
        optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict({k: np.asarray(v) for k, v in saved_scheduler.items()})
    assert scheduler.get_last_lr() == first_scheduler.get_last_lr()
    lrs += run(resumed, optimizer, scheduler, grads[12:])
    assert lrs == expected
    np.testing.assert_array_equal(resumed.data, straight.data)


def test_scheduler_state_dict_errors() -> None:
    _, scheduler = sgd_with("StepLR", Tensor(np.zeros(1)), step_size=2)
    saved = scheduler.state_dict()
    assert saved == {"last_epoch": 0, "base_lrs.0": 0.1, "last_lr.0": 0.1}
    with pytest.raises(ValueError, match=r"StepLR.load_state_dict: missing key\(s\) \['last_"):
        scheduler.load_state_dict({k: v for k, v in saved.items() if k != "last_epoch"})
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['base_lrs.1'\]"):
        scheduler.load_state_dict({**saved, "base_lrs.1": 0.1})
    with pytest.raises(ValueError, match=r"'last_lr.0' must be a number"):
        scheduler.load_state_dict({**saved, "last_lr.0": "0.1"})


def test_one_cycle_past_total_steps() -> None:
    _, scheduler = sgd_with("OneCycleLR", Tensor(np.zeros(1)), max_lr=1.0, total_steps=5)
    for _ in range(5):
        scheduler.step()
    with pytest.raises(ValueError, match=r"OneCycleLR.step: tried to step 6 times, but "
                                         r"total_steps is 5"):
        scheduler.step()


@pytest.mark.parametrize(("name", "kwargs", "error", "match"), [
    ("StepLR", {"step_size": 0}, ValueError, r"StepLR: step_size must be a positive int, got 0"),
    ("StepLR", {"step_size": 2.5}, TypeError, r"StepLR: step_size must be a positive int"),
    ("CosineAnnealingLR", {"T_max": -3}, ValueError, r"T_max must be a positive int, got -3"),
    ("OneCycleLR", {"max_lr": 1.0}, ValueError, r"give either total_steps or both epochs"),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 0}, ValueError, r"total_steps must be a pos"),
    ("OneCycleLR", {"max_lr": 1.0, "epochs": 2, "steps_per_epoch": -1}, ValueError,
     r"steps_per_epoch must be a positive int, got -1"),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "pct_start": 1.5}, ValueError,
     r"pct_start must be in \[0, 1\], got 1.5"),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "anneal_strategy": "exp"}, ValueError,
     r"anneal_strategy must be one of \('cos', 'linear'\), got 'exp'"),
    ("OneCycleLR", {"max_lr": [1.0, 2.0], "total_steps": 9}, ValueError,
     r"max_lr must have one value per param group \(1\), got 2"),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 10, "pct_start": 0.1}, ValueError,
     r"phase 0 of the schedule is empty at step 0"),
])
def test_bad_arguments(name: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sgd_with(name, Tensor(np.zeros(1)), **kwargs)


def test_needs_a_cnnlab_optimizer() -> None:
    with pytest.raises(TypeError, match=r"StepLR: optimizer must be a cnnlab Optimizer"):
        lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), 2)
