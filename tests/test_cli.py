"""The console script: every subcommand has a teaching --help; user errors are one line and a non-zero exit."""

import subprocess
import sys

import pytest

from notagen.cli import COMMANDS, _parse_docstring, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*name.split(), "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: notagen " + name)
    # The description comes from the function's docstring, not an empty placeholder.
    assert len(out.splitlines()) > 4


def test_top_level_help_lists_commands_without_importing_torch() -> None:
    code = "import sys; from notagen.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")
    for name in {n.split()[0] for n in COMMANDS}:
        assert name in result.stdout


def test_docstring_parsing() -> None:
    def sample(path: str, count: int = 3) -> None:
        """Do a thing.

        More words.

        Args:
            path: Where the thing is.
            count: How many times,
                continued here.

        Examples:
            notagen sample x
        """

    description, params, examples = _parse_docstring(sample.__doc__)
    assert description == "Do a thing.\n\nMore words."
    assert params == {"path": "Where the thing is.", "count": "How many times, continued here."}
    assert "notagen sample x" in examples


def test_unknown_command_exits_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
