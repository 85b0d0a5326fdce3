"""The report of the files a pipeline could not decode: skipped_files.txt in the run directory.

One line per file, "<subset>\\t<path>", so the training and held-out pipelines of one run share the
file and each replaces only its own lines. Too many unreadable files (a wrong data directory) stop
the run instead of training on what is left.
"""
import os
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging

SKIPPED_FILE = "skipped_files.txt"


def write_skipped_list(report_dir: str, subset: str, paths: Sequence[str]) -> None:
    """Replaces `subset`'s lines of report_dir/skipped_files.txt ("<subset>\\t<path>" per line),
    keeping the other subsets' lines; the file is removed when no subset has any."""
    path = os.path.join(report_dir, SKIPPED_FILE)
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [line for line in f if line.strip() and line.split("\t", 1)[0] != subset]
    lines = kept + [f"{subset}\t{p}\n" for p in paths]
    if not lines:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(report_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)


def read_skipped_list(report_dir: str) -> Dict[str, List[str]]:
    """{subset: [paths]} from report_dir/skipped_files.txt (empty when there is none)."""
    path = os.path.join(report_dir, SKIPPED_FILE)
    listed = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    subset, file = line.rstrip("\n").split("\t", 1)
                    listed.setdefault(subset, []).append(file)
    return listed


def skipped_note(report_dir: Optional[str], count: int) -> str:
    """The end of the pipeline's cache line: how many files were skipped, and where they are
    listed."""
    listed = f", listed in {os.path.join(report_dir, SKIPPED_FILE)}" if report_dir else ""
    return f"; {count} unreadable file(s) skipped{listed}" if count else "; no unreadable files"


def report_skipped(skipped: Sequence[str], total: int, subset: str, report_dir: Optional[str],
                   max_skipped_fraction: float,
                   before_error: Optional[Callable[[], None]] = None) -> None:
    """Lists `skipped` (of `total` files of `subset`) in report_dir and logs a warning naming the
    first few. When more than `max_skipped_fraction` of the files were skipped (a wrong data
    directory rather than a few bad files) it calls `before_error` (the pipeline deletes its disk
    cache, so the corrected run does not reuse it) and raises ValueError."""
    if report_dir:
        write_skipped_list(report_dir, subset, skipped)
    if not skipped:
        return
    where = f" (full list in {os.path.join(report_dir, SKIPPED_FILE)})" if report_dir else ""
    shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    if len(skipped) > max_skipped_fraction * total:
        if before_error is not None:
            before_error()
        raise ValueError(
            f"{len(skipped)} of {total} {subset} image files could not be "
            f"read or decoded{where}, e.g. {shown}. Is the data directory right?")
    logging.warning("Skipped %d of %d %s files that are not readable images%s: %s",
                    len(skipped), total, subset, where, shown)
