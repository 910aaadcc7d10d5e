"""Helpers for CLI tests: run the click app, check the one-line error contract."""

from click.testing import CliRunner

from cli.main import app


def run(*args):
    """Invoke ``ddim-edit`` with ``args`` (any objects, stringified) through click's CliRunner."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    """Exit code 1, exactly one ``Error:`` line on stderr containing ``fragments``, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
