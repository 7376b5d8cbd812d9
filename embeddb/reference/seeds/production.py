"""production: nothing but what a new live system needs; refuses to run without --force."""


def build(seed: int):
    return []
