"""Bad input never gives a traceback, a lost file or a late refusal: every case of
mpqdm/testing/bad_inputs.py ends with exit code 2 and one error line that names the problem, and every
option of every subcommand (read from the argument parser, so later commands are covered) refuses
a malformed value by name."""

import argparse
import contextlib
import io
import re

import pytest

from mpqdm import cli
from mpqdm.testing.bad_inputs import CASES, make_fixtures, run_case


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_in_one_line(case, paths, tmp_path):
    out = run_case(case, paths, tmp_path / "sandbox")
    assert out.exit == 2, out.stderr[-3000:]
    assert not out.traceback, out.stderr[-3000:]
    assert len(out.error_lines) == 1, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == out.error_lines[0], "the error is the last line"
    assert re.search(case.expect, out.message), out.message
    assert out.lost_files == []


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_has_bad_input_cases():
    covered = {c.argv[0] for c in CASES if c.argv}
    assert set(_subcommands()) <= covered


def _typed_options():
    for cmd, parser in _subcommands().items():
        required = []
        for a in parser._actions:
            if not a.option_strings and a.nargs is None:
                required.append("x")
            elif a.required:
                required += [a.option_strings[0], "x"]
        for a in parser._actions:
            if a.option_strings and a.type is not None:
                yield cmd, a.option_strings[0], required


@pytest.mark.parametrize("cmd,option,required", list(_typed_options()),
                         ids=[f"{c} {o}" for c, o, _ in _typed_options()])
def test_every_typed_option_refuses_a_malformed_value(cmd, option, required):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args([cmd, *required, option, "1,x"])
    lines = err.getvalue().strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and option in lines[0], err.getvalue()
