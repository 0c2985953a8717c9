"""Fixtures of the board tests."""

import pytest

from celosia.sw import cli


@pytest.fixture
def cli_error(capsys):
    """Run ``celosia ARGV`` expecting a one-line error: return that line (``celosia CMD:
    error: ...``), after checking the exit status and that no traceback was printed."""
    def run(argv: list[str]) -> str:
        rc = cli.main(argv)
        err = capsys.readouterr().err
        assert rc == 1 and "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"celosia {argv[0]}: error: ")
        return line
    return run
