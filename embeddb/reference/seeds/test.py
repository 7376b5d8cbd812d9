"""test: a handful of hand-picked rows with fixed ids that tests can name (alice, bob, carol)."""

from embeddb.reference.fixtures import handpicked


def build(seed: int):
    return handpicked(seed)
