"""staging: ten times dev, for load-like rehearsals."""

from embeddb.reference.fixtures import Sizes, marketplace

#: Rows are pure data derived from the seed: a worker process may generate them.
PARALLEL = True


def build(seed: int):
    return marketplace(seed, Sizes().scaled(10))
