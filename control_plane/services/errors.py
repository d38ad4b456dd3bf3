"""Typed errors raised by services; each interface turns them into its own kind of answer."""


class ServiceError(Exception):
    """Base class. ``str(error)`` is a message a person can act on and never holds a secret."""


class NotFound(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class InvalidInput(ServiceError):
    pass


class Forbidden(ServiceError):
    """The actor is in the org but lacks a permission; the message names it."""


class Unavailable(ServiceError):
    """Something the service needs (Redis) does not answer; the message says which."""
