"""The one exception type for mistakes a user can fix (bad config, flag, file or prompt)."""

from typing import Any


class UserError(ValueError):
    """A user-facing error: its message is one sentence naming the value and what was expected.

    `aigc_jax.main` prints it as a single line and exits with status 2, without a traceback.
    """


def lookup(registry: dict[str, Any], name: str, what: str) -> Any:
    """`registry[name]`, or a UserError naming `what`=name and the known names."""
    if name not in registry:
        raise UserError(f"{what}={name!r} is unknown; known: {sorted(registry)}.")
    return registry[name]
