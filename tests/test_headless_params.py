"""Parameters as papermill takes them: ``-f params.yaml`` (or JSON), ``-y YAML``, ``-r NAME VALUE``
beside ``-p NAME=VALUE``, the injected cell's source, and ``--help-notebook``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nborch.notebook.params import injected_source, notebook_help, notebook_parameters, python_literal

from headless_support import by_source, env_for, nborch, notebook, outputs, read, text, write

SHOW = notebook(
    ("n = 3  # how many\nlabel: str = 'base'\nwhen = None", ["parameters"]),
    "for name in ('n', 'label', 'when', 'extra'):\n    if name in globals():\n"
    "        print(name, type(globals()[name]).__name__, repr(globals()[name]))",
)


def test_a_yaml_file_sets_the_parameters_and_the_injected_cell(tmp_path):
    nb = write(tmp_path / "show.ipynb", SHOW)
    (tmp_path / "params.yaml").write_text("n: 7\nlabel: from yaml\nwhen: 2024-01-31\nextra:\n  - 1\n  - two\n")
    r = nborch("run", nb, "out.ipynb", "-f", "params.yaml", cwd=tmp_path)
    assert r.code == 0, r.err
    out = read(tmp_path / "out.ipynb")
    assert outputs(by_source(out, "for name")) == [("stdout", (
        "n int 7\nlabel str 'from yaml'\nwhen str '2024-01-31'\nextra list [1, 'two']\n"))]  # dates stay text
    injected = by_source(out, "# Parameters")
    assert text(injected["source"]) == '# Parameters\nn = 7\nlabel = "from yaml"\nwhen = "2024-01-31"\nextra = [1, "two"]\n'
    assert out["metadata"]["papermill"]["parameters"] == {"n": 7, "label": "from yaml", "when": "2024-01-31",
                                                          "extra": [1, "two"]}


def test_json_file_yaml_string_raw_values_and_their_order(tmp_path):
    nb = write(tmp_path / "show.ipynb", SHOW)
    (tmp_path / "p.json").write_text(json.dumps({"n": 1, "label": "json", "when": 1.5}))
    # later sources win, in papermill's order: -f, then -y, then -p, then -r
    r = nborch("run", nb, "-", "-r", "n", "4", "-p", "n=3", "-y", "{n: 2, label: yaml}", "-f", "p.json",
               cwd=tmp_path)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert outputs(by_source(out, "for name")) == [("stdout", "n str '4'\nlabel str 'yaml'\nwhen float 1.5\n")]


@pytest.mark.parametrize(("files", "args", "message"), [
    ({}, ["-f", "missing.yaml"], "nborch: -f missing.yaml: the file does not exist\n"),
    ({"list.yaml": "- 1\n- 2\n"}, ["-f", "list.yaml"],
     "nborch: -f list.yaml: expected a mapping of parameter names to values, got a list\n"),
    ({"bad.json": "{nope"}, ["-f", "bad.json"], "nborch: -f bad.json: not valid JSON ("),
    ({"bad.yaml": "a: [1,\n"}, ["-f", "bad.yaml"], "nborch: -f bad.yaml: not valid YAML ("),
    ({}, ["-y", "{1x: 2}"], "nborch: -y '{1x: 2}': parameter names must be Python identifiers, got '1x'\n"),
    ({}, ["-r", "1x", "v"], "nborch: -r 1x: a parameter name must be a Python identifier\n"),
], ids=["missing", "not-a-mapping", "bad-json", "bad-yaml", "bad-name", "bad-raw-name"])
def test_bad_parameters_are_one_line_and_exit_2(tmp_path, files, args, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    nb = write(tmp_path / "show.ipynb", SHOW)
    r = nborch("run", nb, "out.ipynb", *args, cwd=tmp_path)
    assert r.code == 2
    assert r.err.startswith(message) and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "out.ipynb").exists() and not r.home.exists()  # nothing ran


def test_yaml_without_pyyaml_says_what_to_install_and_json_still_works(tmp_path):
    nb = write(tmp_path / "show.ipynb", SHOW)
    (tmp_path / "p.yaml").write_text("n: 9\n")
    (tmp_path / "p.json").write_text('{"n": 9}')
    no_yaml = ("import sys; sys.modules['yaml'] = None\n"  # import yaml raises ImportError
               "from nborch.cli import main; sys.exit(main(sys.argv[1:]))")

    def run(*args):
        return subprocess.run([sys.executable, "-c", no_yaml, "run", str(nb), *args], cwd=tmp_path,
                              env=env_for(tmp_path), capture_output=True, text=True, timeout=120)

    proc = run("-f", "p.yaml")
    assert proc.returncode == 2
    assert proc.stderr == ('nborch: -f p.yaml: reading YAML needs PyYAML, which is not installed: '
                           'pip install "nborch[yaml]" (JSON is read without it)\n')
    proc = run("-f", "p.json")
    assert proc.returncode == 0, proc.stderr
    assert "n int 9" in proc.stdout


def test_help_notebook_lists_the_parameters_with_defaults_and_runs_nothing(tmp_path):
    nb = write(tmp_path / "show.ipynb", SHOW)
    r = nborch("run", nb, "--help-notebook", cwd=tmp_path)
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        f"Parameters inferred for notebook '{nb}':",
        "  n: Unknown type (default 3)     how many",
        "  label: str (default 'base')",
        "  when: Unknown type (default None)",
    ]
    assert not r.home.exists()
    bare = write(tmp_path / "bare.ipynb", notebook("x = 1"))
    r = nborch("run", bare, "--help-notebook", cwd=tmp_path)
    assert r.code == 0 and "No cell tagged 'parameters'" in r.out


# -- in process -------------------------------------------------------------------------------------


VALUES = {"i": 3, "neg": -2, "f": 0.25, "big": 1e300, "nan": float("nan"), "inf": float("inf"),
          "minf": float("-inf"), "t": True, "none": None, "s": 'say "hi"\n\ttab é', "empty": "",
          "lst": [1, "a", None, [2.5]], "d": {"k": "v", "n": {"x": 1}}}


def test_injected_source_is_papermills():
    translators = pytest.importorskip("papermill.translators")
    try:
        import black  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("papermill reformats its cell with black when black is installed")
    assert injected_source(VALUES) == translators.PythonTranslator.codify(VALUES)


def test_values_yaml_cannot_hold_are_written_as_their_repr():
    for value in [(1, 2), {3}, b"x", 2j]:
        assert eval(python_literal(value)) == value  # noqa: S307


def test_notebook_parameters_reads_annotations_type_comments_and_help():
    params = notebook_parameters("a: int = 1  # the a\nb = 'x'  # type: str the b\nc = d = 3\nimport os\n"
                                 "e = [\n  1,  # first\n  2,\n]  # the e")
    assert [(p.name, p.inferred_type_name, p.default, p.help) for p in params] == [
        ("a", "int", "1", "the a"), ("b", "str", "'x'", "the b"), ("e", "None", "[ 1, 2, ]", "the e")]
    assert notebook_help("nb.ipynb", "x = (") .endswith("It may not have any parameter defined.")
