"""`python -m provisioner.chart`: rewrite the chart's generated files (helm/ucloud-tre/)."""

from __future__ import annotations

import sys

from provisioner.chart.generate import write_chart


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


write_chart(_say)
