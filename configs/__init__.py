"""Config files: `configs/<family>.py:get_config(variant)`."""
