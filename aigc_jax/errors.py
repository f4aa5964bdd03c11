"""The one exception type for mistakes a user can fix (bad config, flag, file or prompt)."""


class UserError(ValueError):
    """A user-facing error: its message is one sentence naming the value and what was expected.

    `aigc_jax.main` prints it as a single line and exits with status 2, without a traceback.
    """
