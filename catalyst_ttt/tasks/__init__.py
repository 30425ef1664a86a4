"""Problem families; importing this package registers every task in `TASKS`."""

from catalyst_ttt.tasks import alchemy, arith, gsm8k  # noqa: F401  (registers)
from catalyst_ttt.tasks.base import TASKS

__all__ = ["TASKS"]
