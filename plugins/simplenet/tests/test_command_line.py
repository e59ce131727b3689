"""`adcore run` then `adcore predict` give the same scores; Ctrl-C during training keeps no model."""

from adcore.testing import parametrize_with_cli_checks


@parametrize_with_cli_checks("simplenet", ["epochs=1"])
def test_command_line(check):
    check()


def test_resume_after_interrupt():
    from adcore.testing import check_resume_after_interrupt

    check_resume_after_interrupt("simplenet", ["epochs=10", "train_batch_size=1"])
