"""The broker lifts its own open-file limit to the hard limit at start (issue 8: 10,000 idle
connections need 10,000 descriptors; a 1,024 soft default would stop it near a thousand)."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    code = "from leveret.server.runtime import raise_file_limit; import resource; raise_file_limit(); "
    code += "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True)
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert int(out.stdout) == expected
