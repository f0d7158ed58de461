"""ECSeq core: sequence encoders, compressed relation graphs and GNN scoring.

This package knows nothing about Kafka or Faust; the worker and the compression builder
are thin adapters around it.
"""

__version__ = "0.1.0"
