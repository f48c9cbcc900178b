"""The value-decomposition family on RLlib's new API stack: IQL, VDN, QMIX, MFQ, MFQMIX.

`registry.py` lists the algorithms (each a small declaration, see `spec.py`); `config.py`,
`algorithm.py`, `learner.py`, `env_runner.py` and `replay.py` are the shared machinery.
"""

from marlscale.algorithms.registry import ALGORITHMS, get_algorithm
from marlscale.algorithms.spec import AlgorithmSpec

__all__ = ["ALGORITHMS", "AlgorithmSpec", "get_algorithm"]
