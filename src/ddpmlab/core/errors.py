"""Errors a user can act on: each names the bad input and what would be accepted.

All derive from UserError. Every command (each pipeline stage, each tool) ends with one line
`<command>: <message>` and exit status 2 for a UserError, and lets anything else raise with its traceback:
a bug or a CUDA fault is never dressed up as bad input.
"""


class UserError(Exception):
    """An error whose message is the whole story: one line naming the bad input and what to do."""


class DataError(UserError):
    """Input data (archive, checksum, folder, images, arrays) cannot be used; the message says why and what to do."""
