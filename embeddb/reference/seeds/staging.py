"""staging: ten times dev, for load-like rehearsals."""

from embeddb.reference.fixtures import Sizes, marketplace


def build(seed: int):
    return marketplace(seed, Sizes().scaled(10))
