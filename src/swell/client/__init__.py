"""swell's client for the Export and DSAR APIs, against swell or Amplitude itself.

Nothing here imports the server side: only the base URL and the keys differ between the two.

    from swell.client import ExportClient, REGIONS

    with ExportClient(REGIONS["us"], api_key, secret_key, window_hours=6) as export:
        for record in export.export("20240101T00", "20240107T23"):
            ...
        summary = export.export_to("out/", "20240101T00", "20240107T23", output="parquet")

``AsyncExportClient`` and ``AsyncDsarClient`` are the asyncio versions. Every failure is a
``swell.client.errors.ClientError`` with a one-line message and the CLI's exit code.
"""

from __future__ import annotations

from swell.client.budget import Budget, PollSchedule
from swell.client.dsar import AsyncDsarClient, DsarClient, DsarResult, Subject, read_subjects
from swell.client.errors import ClientError
from swell.client.export import AsyncExportClient, ExportClient, ExportSummary
from swell.client.regions import REGIONS
from swell.client.retry import RetryPolicy
from swell.client.windows import Window

__all__ = [
    "REGIONS",
    "AsyncDsarClient",
    "AsyncExportClient",
    "Budget",
    "ClientError",
    "DsarClient",
    "DsarResult",
    "ExportClient",
    "ExportSummary",
    "PollSchedule",
    "RetryPolicy",
    "Subject",
    "Window",
    "read_subjects",
]
