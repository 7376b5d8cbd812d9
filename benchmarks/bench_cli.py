"""CLI start-up: ``embeddb --version`` and ``embeddb info`` on a SQLite file vs a bare
``python -c "import click, peewee, sqlite3"`` (target <= 1.3x), wall time of fresh processes.

The "raw" side is what any click + peewee tool pays before doing anything. Runs of the three
commands take turns, so load from other jobs hits them alike; the median of each is reported.

embeddb's modules are byte-compiled first, as ``pip install`` does for every package (click's
and peewee's ``.pyc`` files are there already): with ``PYTHONDONTWRITEBYTECODE`` set (as on the
machine these figures come from) an editable checkout otherwise recompiles every embeddb module
it imports on every start, ~20 ms that no installed copy pays.
"""

from __future__ import annotations

import compileall
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import report, size

RUNS = size(20, 5)


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    import embeddb

    compileall.compile_dir(Path(embeddb.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'cli.db'}"
        cli = [sys.executable, "-c", "from embeddb.cli import main; main()"]
        embeddb.connect(url).close()  # the file exists: info only reads it
        commands = {
            "raw": [sys.executable, "-c", "import click, peewee, sqlite3"],
            "version": [*cli, "--version"],
            "info": [*cli, "--db", url, "info"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(RUNS):
            for name, command in commands.items():
                times[name].append(_time(command))
        raw = statistics.median(times["raw"])
        for name in ("version", "info"):
            report(f"cli.{name}", "ms", statistics.median(times[name]) * 1e3, raw * 1e3)


if __name__ == "__main__":
    main()
