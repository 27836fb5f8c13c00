"""What every route needs, set up by the app's lifespan."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from swell.auth import Authenticator
from swell.settings import Settings

if TYPE_CHECKING:
    from swell.backends.base import BlobStore, Metadata
    from swell.enrich import RequestContext
    from swell.metrics import Metrics


class Front(Protocol):
    """What the HTTP layer needs from storage: the embedded swell.store.Store, or a scale-out
    node's swell.node.ClusterFront."""

    @property
    def settings(self) -> Settings: ...

    @property
    def meta(self) -> Metadata: ...

    @property
    def blobs(self) -> BlobStore: ...

    async def ingest(self, events: Sequence[Mapping[str, Any]], ctx: RequestContext) -> int: ...

    async def identify(
        self, project_id: int, identifications: Sequence[Mapping[str, Any]], *, group: bool
    ) -> None: ...

    async def seal_project(self, project_id: int, start_hour: int, end_hour: int) -> None: ...

    async def seal_user(
        self, project_id: int, user_id: str | None, amplitude_ids: Set[int]
    ) -> None: ...

    async def ensure_available(self) -> None: ...

    def readiness(self) -> dict[str, dict[str, Any]]: ...

    def start_background(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class AppState:
    settings: Settings
    store: Front
    auth: Authenticator
    started: float = field(default_factory=time.monotonic)
    #: The app's metrics (None with SWELL_METRICS_ENABLED=false).
    metrics: Metrics | None = None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.swell
    return state
