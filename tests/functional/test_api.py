"""The public face of cnnlab.functional (issue 12, point 6; STYLE.md rules 8 and 9): every
public function has a doctest, names its first parameter ``input`` as
``torch.nn.functional`` does (and accepts it as a keyword), lists the parameters it shares
with torch in torch's order, and states its shapes in NumPy-style sections."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch.nn.functional as TF

from cnnlab import functional as F

# Names in F.__all__ that are not functions: two type aliases and a constant.
NOT_FUNCTIONS = {"ArrayOrTensor", "IntOrTuple", "REDUCTIONS"}
PUBLIC = sorted(set(F.__all__) - NOT_FUNCTIONS)


SECTION = r"^{}\n-+$"  # a NumPy-style section title and its underline
SHORT_VARIANT = re.compile(r"[13]d$")  # conv1d, max_pool3d, ...: may defer to the 2-D doc


def _torch_parameters(name: str) -> list[str] | None:
    """Parameter names of ``torch.nn.functional.<name>``; None where torch has no such
    function or its signature cannot be read (a builtin, or a ``*args`` wrapper such as
    ``max_pool2d``'s boolean dispatch)."""
    torch_fn = getattr(TF, name, None)
    if torch_fn is None:
        return None
    try:
        parameters = inspect.signature(torch_fn).parameters.values()
    except (TypeError, ValueError):  # builtins: conv2d, avg_pool2d, linear, gelu, ...
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return None
    return [p.name for p in parameters]


TORCH_COMPARED = [name for name in PUBLIC if _torch_parameters(name) is not None]


def test_public_names_are_functions():
    for name in PUBLIC:
        assert inspect.isfunction(getattr(F, name)), name
    for name in NOT_FUNCTIONS:
        assert not inspect.isfunction(getattr(F, name)), name


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_has_a_doctest(name):
    assert ">>>" in (inspect.getdoc(getattr(F, name)) or ""), f"{name}: no doctest"


@pytest.mark.parametrize("name", PUBLIC)
def test_first_parameter_is_input(name):
    first = next(iter(inspect.signature(getattr(F, name)).parameters))
    assert first == "input", f"{name}: first parameter is {first!r}, torch's name is 'input'"


X22 = np.arange(16.0).reshape(1, 1, 4, 4)
KEYWORD_CALLS = {
    "conv2d": dict(input=X22, weight=np.ones((2, 1, 3, 3)), stride=2),
    "max_pool2d": dict(input=X22, kernel_size=2),
    "pad": dict(input=np.arange(3.0), pad=(1, 2), mode="constant"),
    "relu": dict(input=np.array([-1.0, 0.0, 2.0])),
    "linear": dict(input=np.ones((2, 3)), weight=np.arange(12.0).reshape(4, 3)),
    "cross_entropy": dict(input=np.array([[0.0, 1.0, 2.0]]), target=np.array([1])),
}


@pytest.mark.parametrize("name", sorted(KEYWORD_CALLS))
def test_input_works_as_a_keyword(name):
    fn = getattr(F, name)
    kwargs = dict(KEYWORD_CALLS[name])
    positional = fn(kwargs.pop("input"), **kwargs)
    np.testing.assert_array_equal(fn(**KEYWORD_CALLS[name]), positional)


def test_enough_torch_signatures_are_compared():
    # torch 2.13: 24 of the 49 functions; the others are builtins (conv2d, avg_pool2d, ...),
    # *args wrappers (max_pool2d, adaptive_max_pool2d, ...) or cnnlab's own (conv, blur_pool*).
    assert len(TORCH_COMPARED) >= 20, TORCH_COMPARED


@pytest.mark.parametrize("name", TORCH_COMPARED)
def test_shared_parameters_follow_torchs_order(name):
    ours = list(inspect.signature(getattr(F, name)).parameters)
    theirs = _torch_parameters(name)
    assert theirs is not None
    shared_in_our_order = [p for p in ours if p in theirs]
    shared_in_torch_order = [p for p in theirs if p in ours]
    assert shared_in_our_order == shared_in_torch_order, (
        f"{name}: shared parameters in cnnlab's order {shared_in_our_order}, "
        f"torch's {shared_in_torch_order}")


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_states_shapes(name):
    doc = inspect.getdoc(getattr(F, name)) or ""
    sections = all(re.search(SECTION.format(title), doc, re.MULTILINE)
                   for title in ("Parameters", "Returns"))
    short_variant_shape = SHORT_VARIANT.search(name) is not None and "(N, C" in doc
    assert sections or short_variant_shape, (
        f"{name}: no Parameters and Returns sections"
        + (" and no shape like '(N, C, ...)'" if SHORT_VARIANT.search(name) else ""))
