"""What a user downloads: the wheel and the sdist, built for real from this source tree.

The sdist must run its own tests (every test file, both conftest.py files, the fixture
notebooks, the example notebooks nbval checks); the wheel carries the package, its licence and
``py.typed``, and no tests. Both are built once per session, without build isolation (the test
extra installs ``build`` and ``setuptools``), so this needs no network and takes seconds.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


# Never copied into the clean source tree the build starts from (outside a git checkout).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "venv", "venvs", "*.egg-info", "build", "dist", "__pycache__", "*.py[cod]",
    ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", ".nborch", ".ipynb_checkpoints",
)


def source_tree(dest: Path) -> Path:
    """A clean copy of ROOT: what a fresh clone (plus files not yet committed) holds.

    Building in ROOT itself would not test MANIFEST.in: setuptools also ships every file named
    in a leftover ``nborch.egg-info/SOURCES.txt`` (``pip install -e .`` writes one).
    """
    files = git_tracked(others=True)
    if files is None:
        shutil.copytree(ROOT, dest, ignore=_NOT_SOURCE)
        return dest
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """``python -m build`` (the sdist, then the wheel from that sdist) into a temporary folder."""
    src = source_tree(tmp_path_factory.mktemp("src") / "nborch")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"python -m build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (sdist,) = out.glob("nborch-*.tar.gz")
    (wheel,) = out.glob("nborch-*-py3-none-any.whl")
    return {"sdist": sdist, "wheel": wheel, "out": out}


def sdist_files(sdist: Path) -> set[str]:
    """The sdist's file paths, relative to its top folder (``nborch-0.1.0/``)."""
    with tarfile.open(sdist) as tar:
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name}


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(name).decode())


def git_tracked(*folders: str, others: bool = False) -> list[str] | None:
    """The files git tracks under ``folders`` (all of them if none; with ``others``, also the
    untracked files that .gitignore does not exclude), or None outside a git checkout of ROOT."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return None
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
        return None
    extra = ["--others", "--exclude-standard"] if others else []
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", *extra, "--", *folders], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=True)
    # a file deleted in the work tree but not yet in the index is not in the sdist either
    return [p for p in listed.stdout.split("\0") if p and (ROOT / p).is_file()]


def collected(folder: Path) -> subprocess.Popen[str]:
    """Start ``pytest --collect-only -q`` in ``folder`` with this very environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_the_wheel_holds_the_package_its_licence_and_py_typed_and_no_tests(dist):
    with zipfile.ZipFile(dist["wheel"]) as zf:
        names = zf.namelist()
        licence = [n for n in names if re.fullmatch(r"nborch-[^/]+\.dist-info/licenses/LICENSE", n)]
        assert licence, f"no LICENSE in the wheel: {names}"
        assert "MIT License" in zf.read(licence[0]).decode()
    assert "nborch/py.typed" in names
    assert "nborch/__init__.py" in names and "nborch/store/sqlite.py" in names
    # every module of every layer folder (nborch/core/, nborch/runtime/, the front ends')
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "nborch").rglob("*.py")}
    assert {"nborch/core/engine.py", "nborch/runtime/runner.py"} <= source
    assert not source - set(names), f"modules missing from the wheel: {sorted(source - set(names))}"
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"nborch"}  # no tests/, notebooks/...
    assert not [n for n in names if "conftest" in n or "/tests/" in n or n.endswith((".pyc", ".ipynb"))]


def test_the_metadata_declares_the_licence_the_pythons_and_where_to_find_the_project(dist):
    meta = wheel_metadata(dist["wheel"])
    assert meta["License-Expression"] == "MIT"  # SPDX (PEP 639), not the old free-text License:
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier")
    tested = re.search(r"^VERSIONS=\((.*)\)$", (ROOT / ".ci" / "pythons").read_text(), re.M)
    assert tested, ".ci/pythons has no VERSIONS=(...) line"
    minors = sorted(re.findall(r"3\.(\d+)", tested.group(1)), key=int)
    # the classifiers claim exactly the versions .ci/pythons runs the suite on
    assert [c for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)] == [
        f"Programming Language :: Python :: 3.{m}" for m in minors
    ]
    assert minors == ["11", "12", "13"]
    for wanted in ("Framework :: Jupyter", "Framework :: AsyncIO", "Typing :: Typed",
                   "Operating System :: OS Independent"):
        assert wanted in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Source"] == "https://github.com/nborch/nborch"
    assert urls["Issues"] == "https://github.com/nborch/nborch/issues"
    assert {"Homepage", "Documentation"} <= set(urls)
    assert meta["Author"]


def test_a_plain_install_brings_the_notebook_packages_but_not_nest_asyncio_or_dask(dist):
    requires = wheel_metadata(dist["wheel"]).get_all("Requires-Dist")
    default = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert {"ipython", "ipywidgets", "graphviz", "cloudpickle"} <= default
    assert not default & {"nest-asyncio", "nest_asyncio", "dask", "distributed"}
    notebook = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requires if 'extra == "notebook"' in r}
    assert notebook == {"ipython", "ipywidgets", "graphviz"}  # older instructions keep working


def test_the_sdist_ships_what_its_tests_need(dist):
    files = sdist_files(dist["sdist"])
    for needed in ("LICENSE", "README.md", "pyproject.toml", "constraints.txt", "conftest.py",
                   "tests/conftest.py", "notebooks/nbval_sanitize.cfg", "benchmarks/engine.py",
                   "nborch/py.typed", ".ci/run", ".ci/pythons"):
        assert needed in files, f"{needed} is missing from the sdist"
    assert any(f.startswith("tests/data/") for f in files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_the_sdist_has_every_file_git_tracks_under_tests_notebooks_benchmarks_and_ci(dist):
    tracked = git_tracked("tests", "notebooks", "benchmarks", ".ci")
    if tracked is None:
        pytest.skip("not a git checkout (an unpacked sdist): nothing to compare with")
    missing = sorted(set(tracked) - sdist_files(dist["sdist"]))
    assert not missing, f"tracked files missing from the sdist (see MANIFEST.in): {missing}"


def test_an_unpacked_sdist_collects_the_same_tests_as_this_tree(dist, tmp_path):
    with tarfile.open(dist["sdist"]) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.11.4 and later
            tar.extractall(tmp_path, filter="data")
        else:  # pragma: no cover
            tar.extractall(tmp_path)
    (unpacked,) = tmp_path.iterdir()
    here, there = collected(ROOT), collected(unpacked)  # both at once: collection is ~5 s each
    out_here, _ = here.communicate(timeout=240)
    out_there, _ = there.communicate(timeout=240)

    def ids(output: str) -> set[str]:
        return {line for line in output.splitlines() if "::" in line and not line.startswith(" ")}

    assert here.returncode == 0, out_here[-3000:]
    assert there.returncode == 0, out_there[-3000:]
    assert re.search(r"^(\d+) tests collected", out_there, re.M)
    missing = sorted(ids(out_here) - ids(out_there))
    assert not missing, f"{len(missing)} tests of this tree are not in the sdist, e.g. {missing[:8]}"
    assert ids(out_there) == ids(out_here)
    assert len(ids(out_there)) > 900
