"""User-facing errors: the CLI prints each as one line and exits with code 2."""


class TelescopeError(Exception):
    """Bad input from the user (config, argument, data file, database URL...)."""


class ConfigError(TelescopeError):
    """A sweep config field is missing or invalid; the message names the field."""


class DataError(TelescopeError):
    """A training data source is missing, empty, truncated or of the wrong format."""


class StorageError(TelescopeError):
    """The database or metrics store cannot be opened or is incompatible."""
