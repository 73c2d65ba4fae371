class UserError(Exception):
    """A problem the user can fix; the CLI shows it as one line and exits with code 2."""
