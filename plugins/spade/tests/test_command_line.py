"""`adcore run` then `adcore predict` give the same scores (the kit's command-line checks for spade)."""

from adcore.testing import parametrize_with_cli_checks


@parametrize_with_cli_checks("spade")
def test_command_line(check):
    check()
