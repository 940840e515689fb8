"""Build tools (lock check, audit); not part of the installed package."""
