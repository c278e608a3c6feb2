"""Images onto hosts: each image is copied once per host (a real copy through
libvirt's storage streams, read locally or over SFTP from the image store) and
reused by every later VM there."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import IO, Any

from .errors import HostUnreachable, ImageUnavailable
from .hosts import host_target
from .hypervisor.driver import LibvirtDriver, StagedImage
from .model import ImageSpec
from .registry import HostRow
from .registry.staging import StagingStore
from .remote import Remote, SshSettings, open_local


class ImageStager:
    def __init__(
        self,
        staging: StagingStore,
        driver: LibvirtDriver,
        ssh: SshSettings,
        default_user: str,
    ) -> None:
        self.staging = staging
        self.driver = driver
        self.ssh = ssh
        self.default_user = default_user  # for image stores named without a user

    def stage(self, host: HostRow, image_id: int, spec: ImageSpec) -> StagedImage:
        """The image on the host, copied there first if it is not yet."""
        sources = {"disk": spec.path}
        if spec.kernel:
            sources["kernel"] = spec.kernel
        if spec.initrd:
            sources["initrd"] = spec.initrd
        known = self.staging.get(host.id, image_id) is not None
        staged = self.driver.stage(
            host_target(host),
            f"{image_id}-{spec.name}",
            spec.format,
            sources,
            self._opener(spec),
            reuse=known,
        )
        if not known:
            self.staging.record(host.id, image_id, staged.path, staged.capacity)
        return staged

    def forget(self, host_id: int, image_id: int) -> None:
        """The copy on the host may be broken: the next create copies it again."""
        self.staging.forget(host_id, image_id)

    def _opener(self, spec: ImageSpec) -> Callable[[str], Any]:
        if spec.host is None:
            return open_local
        remote = Remote(spec.user or self.default_user, spec.host, spec.port or 22, self.ssh)

        @contextlib.contextmanager
        def open_remote(path: str) -> Iterator[tuple[IO[bytes], int]]:
            try:
                with remote.open_file(path) as opened:
                    yield opened
            except HostUnreachable as e:
                raise ImageUnavailable(f"image host {e.host}: {e.reason}") from None

        return open_remote
