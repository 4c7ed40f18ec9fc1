"""Errors a user can act on: each names the bad input and what would be accepted."""


class ParamError(ValueError):
    """A value in params.yaml is invalid. The message names the key, the value and the allowed values."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


class DataError(RuntimeError):
    """Input data (archive, checksum, folder, images) cannot be used; the message says why and what to do."""
