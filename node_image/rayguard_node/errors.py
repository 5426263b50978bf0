"""Errors that reach a user as one line: what was wrong and how to fix it."""


class RayguardError(Exception):
    """Base class. `str(error)` is the whole message a user sees."""


class CgroupFormatError(RayguardError):
    """A cgroup or procfs file exists but does not say what the kernel documents."""

    def __init__(self, path: str, content: str, expected: str) -> None:
        shown = content.strip()
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(
            f"cannot parse {path}: expected {expected}, found {shown!r}"
            " (pass --limit-bytes to bypass detection)"
        )
        self.path = path


class InvalidSetting(RayguardError):
    """A flag, env var or spec field holds a value rayguard cannot use."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"invalid {field}={value!r}: {why}")
        self.field = field


class MalformedReport(RayguardError):
    """A report on the stream that is not what `rayguard_node.contract.reports` defines."""


class ImpossiblePlan(RayguardError):
    """The memory budget cannot work: a part would be below what Ray needs."""
