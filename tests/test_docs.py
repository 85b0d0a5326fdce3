"""The documentation's promises: pointers from the code into docs/ resolve, README.md stays
short, and nothing speaks of how the project was developed.

A pointer names a file under docs/ and, optionally, a heading of it in double quotes after a
comma; the heading must be one of that file's markdown headings, word for word.
"""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

# A comment or docstring line break (with the next line's indentation and comment mark) reads as a
# space, so a pointer wrapped over two lines is found whole.
_LINE_BREAK = re.compile(r"\s*\n\s*(?:#\s*)?")
_DOC = r"docs/([\w.-]+\.md)"
_POINTER = re.compile(_DOC + r"(?:,\s*\"([^\"]+)\")?")
_OTHER_FORM = re.compile(_DOC + r"\s*\(\s*\"")  # the file, then the heading in parentheses
# A bare mention of the top-level readme (a section cited by title); README.md and other folders'
# readmes are fine. Split so that this file's own text is not a mention.
_README_CITED = re.compile(r"(?<![\w/.-])READ" r"ME(?!\w|\.md)")
_HISTORY = re.compile(r"stop [0-9]+|commit [0-9a-f]{7}", re.IGNORECASE)
_FIRST_PERSON = re.compile(r"\b(I|we|We|our|Our|ours|Ours|us|my|My)\b")
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def code_files():
    """The Python files the repository's checks cover: *.py and */*.py."""
    return sorted(p for p in [*ROOT.glob("*.py"), *ROOT.glob("*/*.py")] if p.is_file())


def doc_files():
    """README.md and every text file under docs/ (images are skipped)."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*"))]
    return [p for p in files if p.is_file() and p.suffix in (".md", ".txt")]


def headings(path):
    """The markdown headings of `path` ("## Text" -> "Text"), outside fenced code blocks."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.add(line.lstrip("#").strip())
    return found


def pointers(text):
    """(file name, heading or None) for every docs/ pointer in `text`."""
    flat = _LINE_BREAK.sub(" ", text)
    return [(m.group(1), m.group(2)) for m in _POINTER.finditer(flat)]


def broken_pointers(paths, root=ROOT):
    """One line for every docs/ pointer in `paths` whose file or heading under `root` is missing."""
    broken = []
    for path in paths:
        for name, heading in pointers(path.read_text(encoding="utf-8")):
            target = root / "docs" / name
            if not target.is_file():
                broken.append(f"{path.relative_to(root)}: docs/{name} does not exist")
            elif heading is not None and " ".join(heading.split()) not in headings(target):
                broken.append(f"{path.relative_to(root)}: docs/{name} has no heading "
                              f"{heading!r}")
    return broken


def test_the_pointer_check_finds_wrapped_pointers_and_fails_on_broken_ones(tmp_path):
    d = "docs"  # kept apart, so this file's own text holds no pointer
    (tmp_path / d).mkdir()
    (tmp_path / d / "guide.md").write_text(
        "# Guide\n\n## The first pass\n\n```\n# not a heading\n```\n")
    source = tmp_path / "module.py"
    source.write_text(f'# see {d}/guide.md, "The first\n# pass"; {d}/guide.md, "Missing"\n'
                      f'# and {d}/none.md, "Guide"; {d}/guide.md, "not a heading"; {d}/guide.md\n')
    assert pointers(source.read_text()) == [("guide.md", "The first pass"),
                                            ("guide.md", "Missing"), ("none.md", "Guide"),
                                            ("guide.md", "not a heading"), ("guide.md", None)]
    assert broken_pointers([source], tmp_path) == [
        f"module.py: {d}/guide.md has no heading 'Missing'",
        f"module.py: {d}/none.md does not exist",
        f"module.py: {d}/guide.md has no heading 'not a heading'"]


def test_every_docs_pointer_in_the_code_resolves():
    assert broken_pointers(code_files()) == []


def test_code_points_to_docs_in_one_form_and_never_to_readme_sections():
    other_form, readme = [], []
    for path in code_files():
        flat = _LINE_BREAK.sub(" ", path.read_text(encoding="utf-8"))
        other_form += [f"{path.relative_to(ROOT)}: {m.group(0)}"
                       for m in _OTHER_FORM.finditer(flat)]
        readme += [f"{path.relative_to(ROOT)}: ...{flat[max(0, m.start() - 40):m.end() + 40]}..."
                   for m in _README_CITED.finditer(flat)]
    assert other_form == [], "write a pointer as the file, a comma, then the heading in quotes"
    assert readme == [], "point to a docs/ file and heading instead of README.md"


def test_the_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


@pytest.mark.parametrize("kind", ["docs", "code"])
def test_nothing_tells_the_development_history(kind):
    files = doc_files() if kind == "docs" else code_files()
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if _HISTORY.search(line)]
    assert found == []


def test_the_documentation_is_not_written_in_the_first_person():
    found = []
    for path in doc_files():
        fenced = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                fenced = not fenced
            elif not fenced and _FIRST_PERSON.search(_CODE_SPAN.sub("", line)):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
