"""The task registry; importing this package registers every task."""

from catalyst_ttt.registry import Registry

TASKS: Registry = Registry("task")

from catalyst_ttt.tasks import alchemy, arith, gsm8k  # noqa: E402,F401  (registers)
