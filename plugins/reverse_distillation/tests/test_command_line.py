"""`adcore run` then `adcore predict` give the same scores; Ctrl-C during training keeps no model."""

from adcore.testing import parametrize_with_cli_checks


@parametrize_with_cli_checks("reverse_distillation", ["epochs=1"])
def test_command_line(check):
    check()
