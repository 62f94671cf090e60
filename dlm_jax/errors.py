"""The one error type users see: a message that says what to fix."""


class UserError(ValueError):
  """Bad configuration or input. Raised before anything is compiled."""
