"""Checking the lecture's claims on a model: everything here returns data (NumPy arrays,
dataclasses with a readable ``__str__`` or ``to_table()``); :mod:`cnnlab.viz` draws it.

So far: :func:`trace`, the graph capture the analysis functions read models through.
"""

from .graph import CONSTANT, INPUT, Graph, Node, trace

__all__ = ["CONSTANT", "INPUT", "Graph", "Node", "trace"]
