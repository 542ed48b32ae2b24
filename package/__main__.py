"""``python -m tritongpt ...`` == the ``tritongpt`` command (``torchrun --nproc_per_node=N -m tritongpt train``)."""

import sys

from tritongpt.cli import main

sys.exit(main())
