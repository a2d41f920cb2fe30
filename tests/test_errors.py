"""One base for what darts_tf reports on purpose; the commands catch it and nothing else."""

import inspect

import pytest

import darts_tf.visualize
from darts_tf import config, errors
from darts_tf.cnn.genotypes import get_genotype
from darts_tf.commands import build_parser
from darts_tf.commands.common import as_flags


def test_every_reported_error_derives_from_the_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) == 10
    for cls in classes:
        assert issubclass(cls, errors.DartsError)
    for cls in (errors.ConfigError, errors.GenotypeError, errors.DataError, errors.RunDirError, errors.ExportError):
        assert issubclass(cls, ValueError)  # callers' `except ValueError` keeps working


def test_the_old_homes_of_the_errors_still_name_them():
    from darts_tf import data, distribute, export, runs
    from darts_tf.data import corpus

    assert data.DataError is errors.DataError and runs.RunDirError is errors.RunDirError
    assert export.ExportError is errors.ExportError and distribute.WorkerLostError is errors.WorkerLostError
    assert corpus.CorpusError is errors.CorpusError and runs.DivergedError is errors.DivergedError


def test_library_messages_name_config_fields_and_commands_show_flags():
    with pytest.raises(errors.ConfigError, match=r"^`partial_channels` must be a positive divisor of `C` 16"):
        config.check_choices(config.SearchConfig(partial_channels=3))
    message = "`partial_channels` must be a positive divisor of `C` 16. Received: 3"
    assert as_flags(message) == "--partial-channels must be a positive divisor of --C 16. Received: 3"
    with pytest.raises(errors.GenotypeError, match="Unknown genotype 'NOPE'"):
        get_genotype("NOPE")


def _visualize_args(tmp_path):
    parser = build_parser()
    return parser.parse_args(["visualize", "DARTS_V2", "--out", str(tmp_path)])


def test_a_command_turns_a_darts_error_into_one_line_exit_2(tmp_path, monkeypatch, capsys):
    def bad(*args, **kwargs):
        raise errors.ConfigError("`format` must be among png, svg, pdf. Received: 'gif'")

    monkeypatch.setattr(darts_tf.visualize, "visualize", bad)
    args = _visualize_args(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        args._module.run(args, args._parser)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "darts-tf visualize: error: --format must be among png, svg, pdf. Received: 'gif'\n"
    )


@pytest.mark.parametrize("bug", [ValueError("a shape bug"), KeyError("k"), OSError("disk")])
def test_a_command_lets_any_other_exception_show_its_traceback(tmp_path, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(darts_tf.visualize, "visualize", broken)
    args = _visualize_args(tmp_path)
    with pytest.raises(type(bug)):
        args._module.run(args, args._parser)
