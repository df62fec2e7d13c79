"""Output folders (core/io.py): a command replaces a folder only when it is its own earlier output."""

import os

import pytest

from mpqdm.core.errors import UserError
from mpqdm.core.io import MARKER, check_output_dir, check_output_file, replace_dir, staging_dir


def write(out, command, text):
    staging = staging_dir(out)
    (staging / "result.txt").write_text(text)
    replace_dir(staging, out, command)


def test_a_command_replaces_its_own_output_and_nothing_else(tmp_path):
    out = tmp_path / "c"
    write(check_output_dir(out, "compile"), "compile", "one")
    assert (out / MARKER).is_file() and (out / "result.txt").read_text() == "one"
    write(check_output_dir(out, "compile"), "compile", "two")
    assert (out / "result.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]             # no staging or old folder left
    with pytest.raises(UserError, match="an output of mpqdm compile"):
        check_output_dir(out, "quantize")


def test_user_folders_files_inputs_and_the_cwd_are_refused(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="files mpqdm did not write"):
        check_output_dir(mine, "compile")
    with pytest.raises(UserError, match="is a file"):
        check_output_dir(mine / "notes.txt", "compile")
    with pytest.raises(UserError, match="reads"):
        check_output_dir(mine, "compile", reads=[mine])
    with pytest.raises(UserError, match="reads"):
        check_output_dir(tmp_path, "compile", reads=[mine])                 # a folder holding the input
    with pytest.raises(UserError, match="reads"):
        check_output_dir(mine / "sub", "compile", reads=[mine])            # a folder inside the input
    monkeypatch.chdir(mine)
    with pytest.raises(UserError, match="current folder"):
        check_output_dir(".", "compile")
    with pytest.raises(UserError, match="current folder"):
        check_output_dir("..", "compile")
    assert (mine / "notes.txt").read_text() == "keep"


def test_empty_and_legacy_folders_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty, "compile") == empty.resolve()
    old = tmp_path / "old"
    old.mkdir()
    (old / "compile.json").write_text("{}")                 # an output of an earlier mpqdm, before markers
    assert check_output_dir(old, "compile", legacy="compile.json") == old.resolve()
    with pytest.raises(UserError):
        check_output_dir(old, "compile")


def test_an_output_file_is_not_a_folder(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path, "allocate")
    assert check_output_file(tmp_path / "a" / "plan.json", "allocate").parent.is_dir()
    assert not os.listdir(tmp_path / "a")
