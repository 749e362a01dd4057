"""wandapp.methods.schema: the generated `methods:` entry properties, the exact text of the generated block, how
it is found and replaced in the schema, and the `python -m wandapp.methods.schema [--write]` check / rewrite."""

from __future__ import annotations

import pytest
import yaml

from wandapp.methods import hyperparameter_table
from wandapp.methods import schema as s

GBLM_NORM = ("gblm: aggregate the per-sample LM-loss gradients as l2, sqrt(sum (scale*g)^2) (GBLM's default), or l1, "
             "sum |scale*g| (default l2)")
PROFILE = {
    "sparsity_profile": {"type": "string", "enum": ["uniform", "owl"], "description":
                         "layer-wise sparsity: uniform, or owl (runs at the unstructured sparsities only; the N:M ones "
                         "are skipped) (default uniform)"},
    "owl_m": {"type": "number", "exclusiveMinimum": 0,
              "description": "OWL: outlier threshold, times the block's mean Wanda score (default 5)"},
    "owl_lambda": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                   "description": "OWL: block sparsities within the target +- lambda (default 0.08)"},
}


def test_entry_properties():
    props = s.entry_properties()
    assert list(props) == ["method", "preset", *hyperparameter_table(), "sparsity_profile", "owl_m", "owl_lambda",
                           "extra_args"]
    assert props["method"] == {"type": "string", "enum": ["magnitude", "wanda", "sparsegpt", "gblm", "wanda++-rgs",
                                                          "wanda++-ro", "wanda++"]}
    assert props["preset"] == {"type": "string", "enum": ["paper", "tuned", "tuned-long"], "description":
                               "named hyperparameter set (paper: the defaults); explicit keys override it"}
    assert props["gradient_norm"] == {"type": "string", "enum": ["l2", "l1"], "description": GBLM_NORM}
    assert props["blocksize"] == {"type": "integer", "minimum": 1,
                                  "description": "sparsegpt: columns per lazy-update block (default 128)"}
    assert props["percdamp"] == {"type": "number", "exclusiveMinimum": 0, "description":
                                 "sparsegpt: Hessian damping as a fraction of its mean diagonal (default 0.01)"}
    assert props["track_error"] == {"type": "boolean", "description": hyperparameter_table()["track_error"].description}
    assert props["extra_args"] == {"type": "string", "description":
                                   "further `wandapp prune` flags, passed to the shell verbatim (not quoted)"}
    assert {k: props[k] for k in PROFILE} == PROFILE
    assert list(props["gradient_norm"]) == ["type", "enum", "description"]  # the rules, then the description


def test_profile_properties():
    assert s.profile_properties() == PROFILE


def test_render_is_one_flow_line_per_key_between_the_markers():
    props = s.entry_properties()
    text = s.render(3)
    lines = text.split("\n")
    assert text.endswith("\n") and lines[-1] == "" and len(lines) == len(props) + 4
    assert lines[0] == "   " + s.BEGIN and lines[1] == "   properties:" and lines[-2] == "   " + s.END
    assert lines[2] == ("     method: {type: string, enum: [magnitude, wanda, sparsegpt, gblm, wanda++-rgs, "
                        "wanda++-ro, wanda++]}")
    assert lines[4] == ("     blocksize: {type: integer, minimum: 1, description: 'sparsegpt: columns per lazy-update "
                        "block (default 128)'}")
    quoted = GBLM_NORM.replace("'", "''")  # YAML's single-quoted style doubles the quote
    assert f"     gradient_norm: {{type: string, enum: [l2, l1], description: '{quoted}'}}" in lines
    assert yaml.safe_load(s.render(0)) == {"properties": props}
    assert s.render(0) == "".join(line.removeprefix("   ") + "\n" for line in lines[:-1])


# The END marker also appears before the block (in a value), and the block sits at indent 4 after two lines.
PREFIX = "a: 1\nnote: '# END generated elsewhere'\nb:\n"
SUFFIX = "c: 2\n"


def stale_text():
    return PREFIX + "    " + s.BEGIN + " (old)\n    properties: {}\n    " + s.END + " here\n" + SUFFIX


def test_current_block_finds_the_marked_lines():
    text = stale_text()
    start, end, indent = s.current_block(text)
    assert (start, indent) == (len(PREFIX), 4)
    assert text[start:end] == "    " + s.BEGIN + " (old)\n    properties: {}\n    " + s.END + " here\n"
    assert text[end:] == SUFFIX


def test_updated_replaces_only_the_block_at_its_indent():
    assert s.updated(stale_text()) == PREFIX + s.render(4) + SUFFIX
    assert s.updated(s.updated(stale_text())) == s.updated(stale_text())


def test_the_committed_schema_is_current():
    if not s.SCHEMA.exists():  # a copy of the package and tests alone (mutmut's mutants/ folder)
        pytest.skip(f"no {s.SCHEMA}")
    text = s.SCHEMA.read_text()
    assert s.updated(text) == text
    assert s.main([]) == 0


@pytest.fixture
def schema_copy(tmp_path, monkeypatch):
    path = tmp_path / "config.schema.yaml"
    path.write_text(stale_text())
    monkeypatch.setattr(s, "SCHEMA", path)
    return path


def test_check_mode_reports_a_stale_schema_and_leaves_it(schema_copy, capsys):
    assert s.main([]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"{schema_copy} is stale: run python -m wandapp.methods.schema --write\n"
    assert schema_copy.read_text() == stale_text()


def test_write_mode_rewrites_a_stale_schema_once(schema_copy, capsys):
    assert s.main(["--write"]) == 0
    assert capsys.readouterr() == (f"{schema_copy}: updated\n", "")
    assert schema_copy.read_text() == PREFIX + s.render(4) + SUFFIX
    assert sorted(p.name for p in schema_copy.parent.iterdir()) == ["config.schema.yaml"]  # no .tmp left
    inode = schema_copy.stat().st_ino
    assert s.main(["--write"]) == 0
    assert capsys.readouterr() == (f"{schema_copy}: already current\n", "")
    assert schema_copy.stat().st_ino == inode  # not rewritten
    assert s.main([]) == 0 and capsys.readouterr() == ("", "")


def test_help(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        s.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "\nThe workflow schema's method entries, generated from the methods' hyperparameter fields.\n" in out
    assert "--write     rewrite config.schema.yaml (default: check it)\n" in out


def test_current_block_is_the_first_begin_and_the_first_end_after_it():
    """The markers quoted again after the block (and a text that starts with an empty line) do not move it."""
    block = "  " + s.BEGIN + "\n  properties: {}\n  " + s.END + "\n"
    after = "d: '" + s.BEGIN + "'\ne: '" + s.END + "'\n"
    text = "\n" + block + after
    assert s.current_block(text) == (1, 1 + len(block), 2)
    assert s.updated(text) == "\n" + s.render(2) + after
