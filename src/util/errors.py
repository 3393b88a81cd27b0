"""The one line an error is reported by, where a figure is null with its reason or a message
quotes a library's error."""


def first_line(e: BaseException) -> str:
    """The first line of the error's message, or its type's name when the message is empty."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


__all__ = ["first_line"]
