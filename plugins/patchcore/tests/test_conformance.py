"""PatchCore passes the shared adcore detector checks."""

from adcore.testing import parametrize_with_checks
from adcore_plugin_patchcore.detector import PatchCore


@parametrize_with_checks(lambda **kw: PatchCore(**kw))
def test_conformance(check):
    check()
