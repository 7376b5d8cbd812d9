"""dev: a realistic small marketplace (~1,000 users, 200 services, 20,000 payments)."""

from embeddb.reference.fixtures import Sizes, marketplace

#: Rows are pure data derived from the seed: a worker process may generate them.
PARALLEL = True


def build(seed: int):
    return marketplace(seed, Sizes())
