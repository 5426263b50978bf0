"""Where this process's memory and CPU cgroups live, on v1, v2 and hybrid hosts.

The kernel tells us two things: `/proc/<pid>/cgroup` names the cgroup path of each
hierarchy, and `/proc/<pid>/mountinfo` says where each hierarchy is mounted and which
part of it the mount shows (its root). Joining them gives the on-disk directory of our
cgroup, and the chain of directories from it up to the mount root: the part of the
hierarchy this process can read. Everything here takes the procfs and sysfs roots as
arguments so tests can point them at fake trees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rayguard_node.cgroup.namespace import find_namespace_root, levels_above, not_found, own_pids
from rayguard_node.cgroup.reading import MOUNTINFO_MAX_BYTES, read_text
from rayguard_node.errors import CgroupFormatError

V1 = 1
V2 = 2
_DIGITS = re.compile(r"[0-9]{1,9}")
_CONTROLLER = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class CgroupMembership:
    """One line of /proc/<pid>/cgroup."""

    hierarchy_id: int
    controllers: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup or cgroup2 line of /proc/<pid>/mountinfo."""

    root: str
    mount_point: str
    version: int
    controllers: tuple[str, ...]


@dataclass(frozen=True)
class CgroupLocation:
    """Our cgroup in one hierarchy: its path and the directories we can read."""

    version: int
    path: str
    mount_root: str
    mount_point: str
    directory: Path
    mount_directory: Path

    def chain(self) -> list[tuple[str, Path]]:
        """(cgroup path, directory) from our cgroup up to the mount root, leaf first."""
        links: list[tuple[str, Path]] = []
        path = PurePosixPath(self.path)
        directory = self.directory
        while True:
            links.append((str(path), directory))
            if directory == self.mount_directory or str(path) == self.mount_root:
                return links
            if path == path.parent or directory == directory.parent:
                return links
            path, directory = path.parent, directory.parent


def parse_proc_cgroup(text: str, source: str) -> list[CgroupMembership]:
    memberships = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if (len(parts) != 3 or not _DIGITS.fullmatch(parts[0]) or not parts[2].startswith("/")
                or not line.isprintable()):
            raise CgroupFormatError(source, line, "'hierarchy-id:controllers:/path' lines")
        controllers = tuple(c for c in parts[1].split(",") if c)
        memberships.append(CgroupMembership(int(parts[0]), controllers, parts[2]))
    return memberships


def _unescape_mount_field(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return (
        field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def parse_mountinfo(text: str, source: str) -> list[CgroupMount]:
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(" ")  # single spaces: a field (e.g. the source) may be empty
        try:
            separator = fields.index("-")
            fstype, super_options = fields[separator + 1], fields[separator + 3]
            root, mount_point = fields[3], fields[4]
        except (ValueError, IndexError):
            raise CgroupFormatError(source, line, "a mountinfo line with a ' - ' separator") from None
        if fstype == "cgroup2":
            mounts.append(CgroupMount(_unescape_mount_field(root), _unescape_mount_field(mount_point), V2, ()))
        elif fstype == "cgroup":
            options = tuple(o for o in super_options.split(",") if o not in ("rw", "ro"))
            mounts.append(CgroupMount(_unescape_mount_field(root), _unescape_mount_field(mount_point), V1, options))
    return mounts


def host_path(path: str, sysfs_root: Path) -> Path:
    """Map an absolute path under /sys to the given sysfs root (a fake tree in tests)."""
    pure = PurePosixPath(path)
    try:
        return sysfs_root / pure.relative_to("/sys")
    except ValueError:
        return Path(path)


def _relative_to_mount(cgroup_path: str, mount_root: str) -> str | None:
    """Our cgroup path seen from the mount, or None when the mount does not show it."""
    if ".." in PurePosixPath(cgroup_path).parts:
        return None  # outside our cgroup namespace's root: the kernel prints "/../.."
    if mount_root == "/":
        return cgroup_path.lstrip("/")
    if cgroup_path == mount_root:
        return ""
    prefix = mount_root.rstrip("/") + "/"
    return cgroup_path[len(prefix):] if cgroup_path.startswith(prefix) else None


def _locate(membership: CgroupMembership, mount: CgroupMount, sysfs_root: Path,
            procfs_root: Path, pid: str) -> CgroupLocation:
    mount_directory = host_path(mount.mount_point, sysfs_root)
    relative = _relative_to_mount(membership.path, mount.root)
    if relative is None and ".." in PurePosixPath(mount.root).parts:
        return _locate_in_namespace(membership, mount, mount_directory, procfs_root, pid)
    if relative is None:
        # The mount shows a part of the tree that does not contain our cgroup, as in a
        # container without a cgroup namespace whose /proc/self/cgroup names host paths
        # while the mount is rooted at the container's cgroup. The mount root is then
        # the closest directory we can read.
        return CgroupLocation(mount.version, mount.root, mount.root, mount.mount_point,
                              mount_directory, mount_directory)
    directory = mount_directory / relative if relative else mount_directory
    return CgroupLocation(mount.version, membership.path, mount.root, mount.mount_point,
                          directory, mount_directory)


def _locate_in_namespace(membership: CgroupMembership, mount: CgroupMount, mount_directory: Path,
                         procfs_root: Path, pid: str) -> CgroupLocation:
    """Our cgroup namespace's root is below the mount's root (`/../../..`): find it there."""
    below = membership.path.lstrip("/")
    depth, pids = levels_above(mount.root), own_pids(procfs_root, pid)
    found = find_namespace_root(mount_directory, depth, below, pids) if depth else None
    if found is None:
        raise not_found(membership.path, str(procfs_root / pid / "cgroup"), mount.root,
                        mount.mount_point, pids)
    path = "/" + "/".join(part for part in (found, below) if part)
    directory = mount_directory / found / below if below else mount_directory / found
    return CgroupLocation(mount.version, path, "/", mount.mount_point, directory, mount_directory)


def _v2_has_controller(mount: CgroupMount, sysfs_root: Path, controller: str) -> bool:
    """Whether the v2 mount offers the controller. A mount without the file offers none
    (detect then says it found no memory cgroup); an unreadable or garbled file is an error:
    falling back to the host's memory on a guess is how nodes die."""
    controllers_file = host_path(mount.mount_point, sysfs_root) / "cgroup.controllers"
    try:
        text = read_text(controllers_file)  # unreadable: CgroupReadError
    except FileNotFoundError:
        return False
    names = text.split()
    if not all(_CONTROLLER.fullmatch(name) for name in names):
        raise CgroupFormatError(str(controllers_file), text, "controller names separated by spaces")
    return controller in names


def locate_controller(
    controller: str,
    procfs_root: Path = Path("/proc"),
    sysfs_root: Path = Path("/sys"),
    pid: str = "self",
    mounts_of: str | None = None,
) -> CgroupLocation | None:
    """Find the cgroup of `pid` for a controller (`memory`, `cpu`); None when absent.

    A v1 hierarchy carrying the controller wins. That is how hybrid hosts work: the
    unified (v2) mount there has no memory controller, so its `cgroup.controllers`
    does not list it. `mounts_of`: whose mounts to find it through (default: `pid`'s own;
    "self" finds another process's cgroup, a container's, from this process's view).
    """
    cgroup_file = procfs_root / pid / "cgroup"
    mountinfo_file = procfs_root / (mounts_of or pid) / "mountinfo"
    try:
        memberships = parse_proc_cgroup(read_text(cgroup_file), str(cgroup_file))
        mounts = parse_mountinfo(read_text(mountinfo_file, MOUNTINFO_MAX_BYTES), str(mountinfo_file))
    except FileNotFoundError:
        return None
    # Later mounts shadow earlier ones at the same mount point (a container's cgroup
    # bind-mounted over the host's), so the last matching mount is the one in effect.
    for membership in memberships:
        if controller in membership.controllers:
            v1_mounts = [m for m in mounts if m.version == V1 and controller in m.controllers]
            if v1_mounts:
                return _locate(membership, _in_effect(v1_mounts, membership.path), sysfs_root,
                               procfs_root, pid)
    for membership in memberships:
        if membership.hierarchy_id == 0 and not membership.controllers:
            v2_mounts = [m for m in mounts if m.version == V2
                         and _v2_has_controller(m, sysfs_root, controller)]
            if v2_mounts:
                return _locate(membership, _in_effect(v2_mounts, membership.path), sysfs_root,
                               procfs_root, pid)
    return None


def _in_effect(mounts: list[CgroupMount], cgroup_path: str) -> CgroupMount:
    """The last mount that shows our cgroup, else the last one."""
    showing = [m for m in mounts if _relative_to_mount(cgroup_path, m.root) is not None]
    return (showing or mounts)[-1]
