"""The report of the files a pipeline could not decode: skipped_files.txt in the run directory.

One line per file, "<subset>\\t<path>\\t<reason>", so the training and held-out pipelines of one
run share the file and each replaces only its own lines, and the reason says what to fix (empty,
truncated, not an image, over --max_image_pixels). Too many unreadable files (a wrong data
directory) stop the run instead of training on what is left.
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging

SKIPPED_FILE = "skipped_files.txt"


def write_skipped_list(report_dir: str, subset: str, paths: Sequence[str],
                       reasons: Optional[Sequence[str]] = None) -> None:
    """Replaces `subset`'s lines of report_dir/skipped_files.txt ("<subset>\\t<path>\\t<reason>"
    per line), keeping the other subsets' lines; the file is removed when no subset has any."""
    reasons = reasons if reasons is not None else [""] * len(paths)
    path = os.path.join(report_dir, SKIPPED_FILE)
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [line for line in f if line.strip() and line.split("\t", 1)[0] != subset]
    # A reason is one line of text with no tab, so the path is whatever lies between the first
    # tab and the last.
    lines = kept + [f"{subset}\t{p}\t{' '.join(r.split())}\n" for p, r in zip(paths, reasons)]
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
    return {subset: [file for file, _ in entries]
            for subset, entries in read_skipped_reasons(report_dir).items()}


def read_skipped_reasons(report_dir: str) -> Dict[str, List[Tuple[str, str]]]:
    """{subset: [(path, reason)]} from report_dir/skipped_files.txt (empty when there is none;
    the reason empty in a line written before reasons were listed)."""
    path = os.path.join(report_dir, SKIPPED_FILE)
    listed = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    subset, rest = line.rstrip("\n").split("\t", 1)
                    file, _, reason = rest.rpartition("\t") if "\t" in rest else (rest, "", "")
                    listed.setdefault(subset, []).append((file, reason))
    return listed


def skipped_note(report_dir: Optional[str], count: int) -> str:
    """The end of the pipeline's cache line: how many files were skipped, and where they are
    listed."""
    listed = f", listed in {os.path.join(report_dir, SKIPPED_FILE)}" if report_dir else ""
    return f"; {count} unreadable file(s) skipped{listed}" if count else "; no unreadable files"


def report_skipped(skipped: Sequence[str], total: int, subset: str, report_dir: Optional[str],
                   max_skipped_fraction: float,
                   before_error: Optional[Callable[[], None]] = None,
                   reasons: Optional[Sequence[str]] = None) -> None:
    """Lists `skipped` (of `total` files of `subset`), with their `reasons`, in report_dir and
    logs a warning naming the first few. When more than `max_skipped_fraction` of the files were
    skipped (a wrong data directory rather than a few bad files) it calls `before_error` (the
    pipeline deletes its disk cache, so the corrected run does not reuse it) and raises
    ValueError."""
    if report_dir:
        write_skipped_list(report_dir, subset, skipped, reasons)
    if not skipped:
        return
    where = f" (full list in {os.path.join(report_dir, SKIPPED_FILE)})" if report_dir else ""
    named = (skipped if reasons is None
             else [f"{path} ({reason})" for path, reason in zip(skipped, reasons)])
    shown = ", ".join(named[:5]) + (", ..." if len(skipped) > 5 else "")
    if len(skipped) > max_skipped_fraction * total:
        if before_error is not None:
            before_error()
        raise ValueError(
            f"{len(skipped)} of {total} {subset} image files could not be "
            f"read or decoded or are too large{where}, e.g. {shown}. Is the data directory "
            f"right?")
    logging.warning("Skipped %d of %d %s files that are not readable images%s: %s",
                    len(skipped), total, subset, where, shown)
