"""PaDiM passes the shared adcore detector checks."""

from adcore.testing import parametrize_with_checks
from adcore_plugin_padim.detector import PaDiM


@parametrize_with_checks(lambda **kw: PaDiM(**kw))
def test_conformance(check):
    check()
