"""Images onto hosts: each image is copied once per host (a real copy through
libvirt's storage streams, read locally or over SFTP from the image store) and
reused by every later VM there.

Nothing here waits without a deadline: the SSH steps to the store have theirs
(remote.py), a create waits at most ``stage_wait`` for another's copy of the same
image to the same host, and a store that could not be reached is remembered for
``store_retry`` seconds, so the creates after it fail at once with the same reason
instead of each waiting for the store again.
"""

from __future__ import annotations

import contextlib
import threading
import time
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
        *,
        stage_wait: float = 60.0,
        store_retry: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.staging = staging
        self.driver = driver
        self.ssh = ssh
        self.default_user = default_user  # for image stores named without a user
        self.stage_wait = stage_wait
        self.store_retry = store_retry
        self.clock = clock
        self._down: dict[str, tuple[str, float]] = {}  # store -> (why, until when)
        self._down_lock = threading.Lock()

    def stage(self, host: HostRow, image_id: int, spec: ImageSpec) -> StagedImage:
        """The image on the host, copied there first if it is not yet."""
        sources = {"disk": spec.path}
        if spec.kernel:
            sources["kernel"] = spec.kernel
        if spec.initrd:
            sources["initrd"] = spec.initrd
        known = self.staging.get(host.id, image_id) is not None
        if not known and spec.host is not None:
            self._fail_if_down(self._remote(spec).label)  # before waiting for anything
        staged = self.driver.stage(
            host_target(host),
            f"{image_id}-{spec.name}",
            spec.format,
            sources,
            self._opener(spec),
            reuse=known,
            wait=self.stage_wait,
        )
        if not known:
            self.staging.record(host.id, image_id, staged.path, staged.capacity)
        return staged

    def forget(self, host_id: int, image_id: int) -> None:
        """The copy on the host may be broken: the next create copies it again."""
        self.staging.forget(host_id, image_id)

    def _remote(self, spec: ImageSpec) -> Remote:
        return Remote(spec.user or self.default_user, spec.host, spec.port or 22, self.ssh)

    def _fail_if_down(self, store: str) -> None:
        with self._down_lock:
            why, until = self._down.get(store, ("", 0.0))
        left = until - self.clock()
        if left > 0:
            raise ImageUnavailable(
                f"image host {store}: {why} (not tried again for another {left:.0f}s)"
            )

    def _remember_down(self, store: str, why: str) -> None:
        if self.store_retry > 0:
            with self._down_lock:
                self._down[store] = (why, self.clock() + self.store_retry)

    def _opener(self, spec: ImageSpec) -> Callable[[str], Any]:
        if spec.host is None:
            return open_local
        remote = self._remote(spec)

        @contextlib.contextmanager
        def open_remote(path: str) -> Iterator[tuple[IO[bytes], int]]:
            self._fail_if_down(remote.label)
            try:
                with remote.open_file(path) as opened:
                    yield opened
            except HostUnreachable as e:
                if e.host != remote.label:
                    raise  # the host being copied to, not the store
                self._remember_down(remote.label, e.reason)
                raise ImageUnavailable(f"image host {e.host}: {e.reason}") from None

        return open_remote
