"""Checking the lecture's claims on a model: everything here returns data (NumPy arrays,
dataclasses with a readable ``__str__`` or ``to_table()``); :mod:`cnnlab.viz` draws it.

So far: :func:`trace`, the graph capture the analysis functions read models through, and
:func:`conv_matrix`, a convolution as the sparse matrix it is, and :func:`parameter_table`;
:func:`periodic_convolution` and :func:`frequency_response`, the continuous picture.
"""

from .continuous import FrequencyResponse, frequency_response, periodic_convolution
from .equivariance import (
    AntialiasedPool,
    EquivarianceReport,
    EquivarianceRow,
    ShiftConsistency,
    ShiftRobustness,
    equivariance_report,
    shift_consistency,
    shift_robustness,
    swap_pooling,
)
from .features import (
    FeatureVisualisation,
    TopActivations,
    top_activations,
    visualise_channel,
)
from .gradcam import GradCAM, grad_cam
from .graph import CONSTANT, INPUT, Graph, Node, trace
from .kernel import KernelEstimate, kernel_of
from .matrix import ConvMatrixStats, conv_matrix, conv_matrix_stats
from .parameters import ParameterRow, ParameterTable, parameter_table
from .receptive import (
    EffectiveReceptiveField,
    ReceptiveFieldRow,
    ReceptiveFields,
    effective_receptive_field,
    receptive_fields,
)
from .stats import ActivationStats, LayerStats, TrainingStats, activation_stats, read_training_stats

__all__ = [
    "CONSTANT",
    "INPUT",
    "ActivationStats",
    "AntialiasedPool",
    "ConvMatrixStats",
    "EffectiveReceptiveField",
    "EquivarianceReport",
    "EquivarianceRow",
    "FeatureVisualisation",
    "FrequencyResponse",
    "GradCAM",
    "Graph",
    "KernelEstimate",
    "LayerStats",
    "Node",
    "ParameterRow",
    "ParameterTable",
    "ReceptiveFieldRow",
    "ReceptiveFields",
    "ShiftConsistency",
    "ShiftRobustness",
    "TopActivations",
    "TrainingStats",
    "activation_stats",
    "conv_matrix",
    "conv_matrix_stats",
    "effective_receptive_field",
    "equivariance_report",
    "frequency_response",
    "grad_cam",
    "kernel_of",
    "parameter_table",
    "periodic_convolution",
    "read_training_stats",
    "receptive_fields",
    "shift_consistency",
    "shift_robustness",
    "swap_pooling",
    "top_activations",
    "trace",
    "visualise_channel",
]
