"""dev: a realistic small marketplace (~1,000 users, 200 services, 20,000 payments)."""

from embeddb.reference.fixtures import Sizes, marketplace


def build(seed: int):
    return marketplace(seed, Sizes())
