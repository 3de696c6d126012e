"""What the test tiers share: the repository's paths, a world to write bookings in, the CLI as a subprocess.

The suite runs against the installed package: nothing here (nor in any test) puts the
checkout's `listener` ahead of it.
"""

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parent.parent
