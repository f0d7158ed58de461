"""The one error type of the Kafka adapters: its message is meant for an operator, one line, no traceback."""


class BrokerError(RuntimeError):
    """Kafka could not be set up, reached or used; the message says what and where."""
