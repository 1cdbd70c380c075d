"""Running ``realloop-dataset`` in-process in the CLI tests, and the one-line error they expect."""

from __future__ import annotations

import pytest

from realloop.data.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``realloop-dataset *argv``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, err
