"""What every route needs, set up by the app's lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from swell.auth import Authenticator
from swell.settings import Settings
from swell.store import Store


@dataclass
class AppState:
    settings: Settings
    store: Store
    auth: Authenticator
    started: float = field(default_factory=time.monotonic)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.swell
    return state
