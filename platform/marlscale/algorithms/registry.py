"""The algorithm registry. Adding an algorithm: a small declaration file and one line here."""

from __future__ import annotations

from marlscale.algorithms.iql import IQL
from marlscale.algorithms.mfq import MFQ
from marlscale.algorithms.mfqmix import MFQMIX
from marlscale.algorithms.qmix import QMIX
from marlscale.algorithms.spec import AlgorithmSpec
from marlscale.algorithms.vdn import VDN

ALGORITHMS: dict[str, AlgorithmSpec] = {spec.name: spec for spec in (IQL, VDN, QMIX, MFQ, MFQMIX)}


def get_algorithm(name: str, key: str = "algorithm") -> AlgorithmSpec:
    """The declaration registered under `name`; a ValueError naming `key` otherwise."""
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"{key}={name!r} is invalid; allowed: {', '.join(sorted(ALGORITHMS))}"
        ) from None
