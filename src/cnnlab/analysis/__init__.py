"""Checking the lecture's claims on a model: everything here returns data (NumPy arrays,
dataclasses with a readable ``__str__`` or ``to_table()``); :mod:`cnnlab.viz` draws it.

So far: :func:`trace`, the graph capture the analysis functions read models through, and
:func:`conv_matrix`, a convolution as the sparse matrix it is, and :func:`parameter_table`.
"""

from .graph import CONSTANT, INPUT, Graph, Node, trace
from .matrix import ConvMatrixStats, conv_matrix, conv_matrix_stats
from .parameters import ParameterRow, ParameterTable, parameter_table

__all__ = ["CONSTANT", "INPUT", "ConvMatrixStats", "Graph", "Node", "ParameterRow",
           "ParameterTable", "conv_matrix", "conv_matrix_stats", "parameter_table", "trace"]
