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


class CgroupReadError(CgroupFormatError):
    """A cgroup or procfs file that exists but cannot be read as a small regular file."""

    def __init__(self, path: str, why: str) -> None:
        RayguardError.__init__(self, f"cannot read {path}: {why} (pass --limit-bytes to bypass detection)")
        self.path = path


class CgroupNotFound(RayguardError):
    """This process's cgroup exists but no mount this process can read shows it."""


class InvalidSetting(RayguardError):
    """A flag, env var or spec field holds a value rayguard cannot use."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"invalid {field}={value!r}: {why}")
        self.field = field


class MalformedReport(RayguardError):
    """A report on the stream that is not what `rayguard_node.contract.reports` defines."""


class ImpossiblePlan(RayguardError):
    """The memory budget cannot work: a part would be below what Ray needs. `knob` names the
    budget setting to raise (a `BudgetSettings` field) when one is to blame, else None: then
    the memory limit is."""

    def __init__(self, message: str, knob: str | None = None) -> None:
        super().__init__(message)
        self.knob = knob
