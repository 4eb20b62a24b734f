"""Bundle benchmark: the Linux release's size (unpacked and packed), its ten biggest parts, and the
seconds from start to the first window shown (offscreen) for the bundle against the development
install (`python main.py gui`), both through the `gui --quit-after-shown` hook.

Prints one JSON document. Usage: `python bench/bundle.py [--archive dist/medfedchain-*.tar.gz]
[--repeat 3]`; the archive is built by `packaging/linux/build.sh`. Each start runs on the same fresh
home (made by the first, untimed, start); the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
SHOWN = re.compile(r"window shown after (\d+\.\d+) s")


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def biggest(bundle: Path, count: int = 10) -> list[dict[str, object]]:
    """The biggest entries of the bundle's library folder (_internal) and of the largest package in it,
    whichever files or folders they are, sorted by size."""
    internal = bundle / "_internal" if (bundle / "_internal").is_dir() else bundle
    sizes: dict[Path, int] = {}
    for entry in internal.iterdir():
        sizes[entry] = tree_size(entry) if entry.is_dir() else entry.stat().st_size
    largest = max((p for p in sizes if p.is_dir()), key=sizes.__getitem__)
    del sizes[largest]  # shown by its own biggest parts instead
    for entry in largest.iterdir():
        sizes[entry] = tree_size(entry) if entry.is_dir() else entry.stat().st_size
    top = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:count]
    return [{"path": str(path.relative_to(bundle)) + ("/" if path.is_dir() else ""), "bytes": size,
             "mb": round(size / MB, 1)} for path, size in top]


def environment(clean: bool) -> dict[str, str]:
    env = dict(os.environ) | {"QT_QPA_PLATFORM": "offscreen", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if clean:  # the bundle runs without any trace of the virtual environment
        venv = Path(sys.prefix).resolve()
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if p and not Path(p).resolve().is_relative_to(venv))
    return env


def time_to_window(command: list[str], home: Path, repeat: int, clean: bool) -> dict[str, object]:
    """Median seconds from process start to the window shown, over `repeat` starts after one warm-up."""
    seconds = []
    for attempt in range(repeat + 1):
        result = subprocess.run([*command, "gui", "--quit-after-shown", "--home", str(home)], cwd=home,
                                env=environment(clean), capture_output=True, text=True, timeout=600)
        match = SHOWN.search(result.stdout)
        if result.returncode != 0 or match is None:
            raise SystemExit(f"{command[0]} gui failed ({result.returncode}): {result.stderr[-2000:]}")
        if attempt:  # the first start warms the page cache and creates the home's database
            seconds.append(float(match.group(1)))
    return {"median_seconds": round(statistics.median(seconds), 2), "runs_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    archive = args.archive or max((ROOT / "dist").glob("medfedchain-*-linux-x86_64.tar.gz"), default=None)
    if archive is None:
        raise SystemExit("no dist/medfedchain-*-linux-x86_64.tar.gz: run `bash packaging/linux/build.sh`")
    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as work:
        work_dir = Path(work)
        with tarfile.open(archive) as tar:
            tar.extractall(work_dir / "unpacked", filter="tar")
        (top,) = (work_dir / "unpacked").iterdir()
        bundle = top / "medfedchain"
        unpacked = tree_size(top)
        (work_dir / "bundle-home").mkdir()
        (work_dir / "dev-home").mkdir()
        bundled = time_to_window([str(bundle / "medfedchain")], work_dir / "bundle-home", args.repeat, clean=True)
        development = time_to_window([sys.executable, str(ROOT / "main.py")], work_dir / "dev-home", args.repeat,
                                     clean=False)
        report = {
            "archive": archive.name,
            "packed": {"bytes": archive.stat().st_size, "mb": round(archive.stat().st_size / MB, 1)},
            "unpacked": {"bytes": unpacked, "mb": round(unpacked / MB, 1)},
            "biggest": biggest(bundle),
            "time_to_window": {
                "bundle": bundled,
                "development": development,
                "bundle_over_development": round(float(bundled["median_seconds"])  # type: ignore[arg-type]
                                                 / float(development["median_seconds"]), 2),  # type: ignore[arg-type]
            },
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
