"""Synthetic Amplitude export records: realistic enough to benchmark and demo, fast enough for 10M.

Records come out in non-decreasing ``server_upload_time`` order (the export partition key), so a
consumer can file them hour by hour with one hour open. Output is a pure function of the arguments:
every random choice comes from a ``random.Random`` seeded from ``seed``, never from the OS (UUIDs
included).

Shape of the data:

* users are Zipf-skewed (weight ``1 / rank**1.1``): a few heavy users and a long tail; ~80% are
  identified (``user_id`` set), the rest anonymous; each has 1-2 devices with stable fields;
* volume follows a day/night and weekday/weekend curve;
* SDK devices (web, iOS, Android) have sessions (``session_id`` = start in epoch ms, 30 min idle
  timeout, a ``[Amplitude] Start Session`` event each); server-side senders use ``session_id`` -1;
* ~2.5% of events are uploaded late (minutes to days) and ~3% of devices have a skewed clock, so
  ``event_time`` differs from ``client_event_time`` where the 60-s rule says it should.

Records share nested dicts (``event_properties`` come from a pool of 65536 pre-drawn ones;
``user_properties``, ``data``, ... from the device): treat yielded records as read-only, or copy
them before mutating.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate, chain
from typing import Any

from swell.model import DICT_KEYS, EPOCH, EXPORT_KEYS

#: The Zipf exponent of user activity.
ZIPF_S = 1.1
#: Events more than this far apart on a device start a new session (Amplitude SDK default).
SESSION_TIMEOUT_MS = 30 * 60 * 1000
#: ``event_time`` is only adjusted for clock skew of at least this much (Amplitude's rule).
SKEW_THRESHOLD_MS = 60 * 1000

_STAY = 0.8  # the chance that an event continues a visit in progress rather than starting one

_POOL = 1 << 16  # pre-drawn (event_type, event_properties) pairs
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_BASE: dict[str, Any] = {key: ({} if key in DICT_KEYS else None) for key in EXPORT_KEYS}
_HOURS_MINUTES = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_TAILS = [f"{ms // 1000:02d}.{ms % 1000:03d}000" for ms in range(60_000)]  # "SS.ffffff"
_MASK128 = (1 << 128) - 1
#: Hex digit → the RFC 4122 variant digit (8-b) keeping its two low bits.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}

# (weight, event_type); session starts are added separately for SDK devices.
_EVENT_TYPES: tuple[tuple[float, str], ...] = (
    (40.0, "Page Viewed"),
    (18.0, "Button Clicked"),
    (9.0, "Product Viewed"),
    (7.0, "Search"),
    (4.0, "Add to Cart"),
    (3.0, "Login"),
    (3.0, "Video Played"),
    (2.0, "Notification Opened"),
    (1.5, "Checkout Started"),
    (1.0, "Purchase"),
    (1.0, "Error Shown"),
    (0.7, "Share"),
    (0.5, "Logout"),
    (0.3, "Sign Up"),
)

_PATHS = ("/", "/pricing", "/docs", "/blog", "/product", "/cart", "/account", "/search", "/about")
_REFERRERS = (None, None, "https://www.google.com/", "https://news.ycombinator.com/", "direct")
_BUTTONS = ("cta-signup", "cta-demo", "nav-menu", "add-to-cart", "play", "share", "close-modal")
_CATEGORIES = ("books", "electronics", "garden", "toys", "apparel", "grocery")
_QUERIES = ("shoes", "laptop", "gift ideas", "coffee", "headphones", "tent", "lamp", "")
_METHODS = ("email", "google", "github", "apple")
_ERRORS = ((404, "Not found"), (500, "Something went wrong"), (402, "Payment declined"))
_CHANNELS = ("email", "push", "in-app")

# Device profiles: (weight, fields). Fields not named here stay None.
_WEB = "amplitude-ts/2.11.0"
_DEVICES: tuple[tuple[float, dict[str, Any]], ...] = (
    (
        24.0,
        {
            "platform": "Web",
            "os_name": "Chrome",
            "os_version": "124",
            "device_family": "Mac OS",
            "device_type": "Mac",
            "library": _WEB,
        },
    ),
    (
        20.0,
        {
            "platform": "Web",
            "os_name": "Chrome",
            "os_version": "125",
            "device_family": "Windows",
            "device_type": "Windows",
            "library": _WEB,
        },
    ),
    (
        8.0,
        {
            "platform": "Web",
            "os_name": "Safari",
            "os_version": "17.4",
            "device_family": "Mac OS",
            "device_type": "Mac",
            "library": _WEB,
        },
    ),
    (
        4.0,
        {
            "platform": "Web",
            "os_name": "Firefox",
            "os_version": "126",
            "device_family": "Linux",
            "device_type": "Linux",
            "library": _WEB,
        },
    ),
    (
        6.0,
        {
            "platform": "Web",
            "os_name": "Mobile Safari",
            "os_version": "17.5",
            "device_family": "Apple iPhone",
            "device_type": "Apple iPhone",
            "library": _WEB,
        },
    ),
    (
        10.0,
        {
            "platform": "iOS",
            "os_name": "ios",
            "os_version": "17.5.1",
            "device_family": "Apple iPhone",
            "device_type": "Apple iPhone 15",
            "device_brand": "Apple",
            "device_manufacturer": "Apple",
            "device_model": "iPhone15,4",
            "library": "amplitude-swift/1.6.1",
            "version_name": "4.12.0",
        },
    ),
    (
        4.0,
        {
            "platform": "iOS",
            "os_name": "ios",
            "os_version": "18.1.1",
            "device_family": "Apple iPad",
            "device_type": "Apple iPad Air",
            "device_brand": "Apple",
            "device_manufacturer": "Apple",
            "device_model": "iPad13,16",
            "library": "amplitude-swift/1.6.1",
            "version_name": "4.12.0",
        },
    ),
    (
        9.0,
        {
            "platform": "Android",
            "os_name": "android",
            "os_version": "14",
            "device_family": "Samsung Phone",
            "device_type": "Samsung Galaxy S23",
            "device_brand": "samsung",
            "device_manufacturer": "samsung",
            "device_model": "SM-S911B",
            "library": "amplitude-android/1.16.3",
            "version_name": "4.11.2",
        },
    ),
    (
        4.0,
        {
            "platform": "Android",
            "os_name": "android",
            "os_version": "13",
            "device_family": "Google Phone",
            "device_type": "Google Pixel 7",
            "device_brand": "google",
            "device_manufacturer": "Google",
            "device_model": "Pixel 7",
            "library": "amplitude-android/1.16.3",
            "version_name": "4.11.2",
        },
    ),
    (5.0, {"library": "amplitude-python/1.2.3"}),
    (4.0, {"library": "http/2.0"}),
    (2.0, {"library": "batch/1.0"}),
)
_SERVER_SIDE = frozenset({"amplitude-python/1.2.3", "http/2.0", "batch/1.0"})
_CARRIERS = ("T-Mobile", "Verizon", "AT&T", "Vodafone", "Orange", "Telekom", None)

# (weight, country, region, city, dma, language, ip prefix)
_PLACES: tuple[tuple[float, str, str, str, str | None, str, str], ...] = (
    (
        14.0,
        "United States",
        "California",
        "San Francisco",
        "San Francisco-Oakland-San Jose, CA",
        "English",
        "198.51.100.",
    ),
    (10.0, "United States", "New York", "New York", "New York, NY", "English", "198.51.100."),
    (5.0, "United States", "Texas", "Austin", "Austin, TX", "English", "198.51.100."),
    (
        3.0,
        "United States",
        "Michigan",
        "Flint",
        "Flint-Saginaw-Bay City, MI",
        "English",
        "198.51.100.",
    ),
    (8.0, "United Kingdom", "England", "London", None, "English", "203.0.113."),
    (7.0, "Germany", "Berlin", "Berlin", None, "German", "203.0.113."),
    (5.0, "France", "Île-de-France", "Paris", None, "French", "203.0.113."),
    (6.0, "India", "Karnataka", "Bengaluru", None, "English", "192.0.2."),
    (5.0, "Brazil", "São Paulo", "São Paulo", None, "Portuguese", "192.0.2."),
    (4.0, "Japan", "Tokyo", "Tokyo", None, "Japanese", "192.0.2."),
    (3.0, "Canada", "Ontario", "Toronto", None, "English", "198.51.100."),
    (2.0, "Spain", "Madrid", "Madrid", None, "Spanish", "203.0.113."),
)
_PLANS = ("free", "free", "free", "pro", "pro", "team", "enterprise")
_COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries")


def generate_records(
    project_id: int,
    *,
    events: int,
    days: int,
    users: int,
    seed: int = 0,
    end: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``events`` export records of ``users`` users over the ``days`` days before ``end``.

    Each record has exactly the 55 ``EXPORT_KEYS`` in order; ``server_upload_time`` is
    non-decreasing and lies in ``[end - days, end)``. ``end`` defaults to now, rounded down to the
    hour (UTC). The output depends only on the arguments.

    Raises:
        ValueError: ``events`` is negative, or ``days`` or ``users`` is below 1.
    """
    if events < 0 or days < 1 or users < 1:
        raise ValueError("events must be >= 0, days and users >= 1")
    if end is None:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    end_ms = (end - EPOCH) // timedelta(milliseconds=1)
    return _generate(project_id, events, days, users, seed, end_ms)


def _generate(
    project_id: int, events: int, days: int, users: int, seed: int, end_ms: int
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    rand = rng.random
    bits = rng.getrandbits
    population = _Population(project_id, users, seed)
    pick_user = population.pick
    clock = _Clock()
    ts = clock.format
    minute_prefix = clock.prefix
    tails = _TAILS
    # Event types with their properties, pre-drawn: a pool lookup is 5x cheaper than drawing.
    # Two flat lists rather than one of (kind, properties) pairs: 65536 fewer tuples for the
    # cyclic garbage collector to walk again and again while the consumer holds records.
    kind_cum = list(accumulate(weight for weight, _ in _EVENT_TYPES))
    kinds = []
    pool = []
    for _ in range(_POOL):
        kind = _EVENT_TYPES[bisect(kind_cum, rand() * kind_cum[-1])][1]
        kinds.append(kind)
        pool.append(_PROPERTIES[kind](rand))
    start_session = "[Amplitude] Start Session"
    no_properties: dict[str, Any] = {}
    variant = _VARIANT

    # Per-device mutable state, indexed 2 * user + slot: last event id, session start, last event.
    event_ids = array("q", bytes(16 * users))
    sessions = array("q", bytes(16 * users))
    last_seen = array("q", bytes(16 * users))

    # Visits: most events go to a device active in the last ~20 minutes, so sessions hold
    # several events; the rest start a visit by a Zipf-chosen user, evicting the oldest visit.
    active: list[_Device] = []
    slots = max(1, int((1 - _STAY) * events / (days * 72)))
    oldest = 0

    stay = _STAY
    # The upload's minute: uploads never go back in time, so it only moves forward.
    minute_ms = -_DAY_MS
    prefix = ""
    for upload_ms in chain.from_iterable(_upload_hours(rng, events, days, end_ms)):
        r = rand()
        if r < stay and active:
            template, device, sdk, skew_ms = active[int(r * len(active) / stay)]
        else:
            visit = template, device, sdk, skew_ms = pick_user(rand(), rand())
            if len(active) < slots:
                active.append(visit)
            else:
                active[oldest] = visit
                oldest = (oldest + 1) % slots
        record = template.copy()

        # Times within the upload's minute are formatted as prefix + tails[ms into the minute];
        # most of a record's times fall in that minute, the others take the slower ts().
        upload_at = upload_ms - minute_ms
        if upload_at >= 60_000:
            minute = upload_ms // 60_000
            prefix = minute_prefix(minute)
            minute_ms = minute * 60_000
            upload_at = upload_ms - minute_ms
        received_at = upload_at - int(rand() * 9)
        processed_at = upload_at + 40 + int(rand() * 900)
        received_ms = minute_ms + received_at
        # Server-side senders send no upload time: Amplitude then uses the receive time.
        client_upload_ms = received_ms - 20 - int(rand() * 380) + skew_ms if sdk else received_ms
        r = rand()
        if r < 0.025:  # queued offline: minutes to ~2 days late
            delay_ms = int(60_000 + 172_800_000 * r * r * 1600)
        else:
            delay_ms = int(r * (1500 if sdk else 4000))
        event_ms = client_upload_ms - delay_ms
        adjust_ms = received_ms - client_upload_ms
        if -SKEW_THRESHOLD_MS < adjust_ms < SKEW_THRESHOLD_MS:
            adjust_ms = 0

        drawn = int(rand() * _POOL)
        kind = kinds[drawn]
        properties = pool[drawn]
        if sdk:
            session = sessions[device]
            seen = last_seen[device]
            if event_ms >= session and event_ms - seen <= SESSION_TIMEOUT_MS:
                if event_ms > seen:
                    last_seen[device] = event_ms
            elif event_ms > seen:
                session = sessions[device] = last_seen[device] = event_ms
                kind, properties = start_session, no_properties
            else:  # a late event from a session we have moved past
                session = event_ms
            record["session_id"] = session
        else:
            record["session_id"] = -1

        event_id = event_ids[device] + 1
        event_ids[device] = event_id
        h = bits(256).to_bytes(32).hex()
        record["$insert_id"] = (
            f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"
        )
        received = prefix + tails[received_at] if received_at >= 0 else ts(received_ms)
        at = event_ms - minute_ms
        event_time = prefix + tails[at] if 0 <= at < 60_000 else ts(event_ms)
        record["client_event_time"] = event_time
        if sdk:
            at = client_upload_ms - minute_ms
            record["client_upload_time"] = (
                prefix + tails[at] if 0 <= at < 60_000 else ts(client_upload_ms)
            )
        else:
            record["client_upload_time"] = received
        record["event_id"] = event_id
        record["event_properties"] = properties
        record["event_time"] = ts(event_ms + adjust_ms) if adjust_ms else event_time
        record["event_type"] = kind
        record["processed_time"] = (
            prefix + tails[processed_at] if processed_at < 60_000 else ts(minute_ms + processed_at)
        )
        record["server_received_time"] = received
        record["server_upload_time"] = prefix + tails[upload_at]
        record["uuid"] = f"{h[32:40]}-{h[40:44]}-4{h[45:48]}-{variant[h[48]]}{h[49:52]}-{h[52:]}"
        yield record


def _upload_hours(rng: random.Random, events: int, days: int, end_ms: int) -> Iterator[list[int]]:
    """Yield, hour by hour, the sorted upload times (epoch ms) of ``events`` events.

    The hours run over ``[end_ms - days, end_ms)``; each gets its share of the events from a
    day/night and weekday/weekend curve with some noise.
    """
    start_ms = end_ms - days * _DAY_MS
    hours = days * 24
    weights = []
    for h in range(hours):
        moment = EPOCH + timedelta(milliseconds=start_ms + h * _HOUR_MS)
        daily = 0.25 + max(0.0, 1.0 - abs(moment.hour - 15) / 9.0)  # peak at 15:00 UTC
        weekly = 0.7 if moment.weekday() >= 5 else 1.0
        weights.append(daily * weekly * (0.85 + 0.3 * rng.random()))
    cum = list(accumulate(weights))
    rand = rng.random
    done = 0
    for h in range(hours):
        upto = round(events * cum[h] / cum[-1]) if h < hours - 1 else events
        base = start_ms + h * _HOUR_MS
        yield sorted([base + int(rand() * _HOUR_MS) for _ in range(upto - done)])
        done = upto


class _Clock:
    """Format epoch ms as ``YYYY-MM-DD HH:MM:SS.ffffff``, far faster than ``strftime``.

    ``prefix(minute) + _TAILS[ms into the minute]`` is the fast path: a record's times mostly
    share the minute of its upload.
    """

    def __init__(self) -> None:
        self.prefixes: dict[int, str] = {}  # minute -> "YYYY-MM-DD HH:MM:"
        self._dates: dict[int, str] = {}

    def prefix(self, minute: int) -> str:
        text = self.prefixes.get(minute)
        if text is None:
            if len(self.prefixes) >= 4096:
                self.prefixes.clear()
            day, in_day = divmod(minute, 1440)
            date = self._dates.get(day)
            if date is None:
                date = self._dates[day] = f"{EPOCH + timedelta(days=day):%Y-%m-%d} "
            text = self.prefixes[minute] = date + _HOURS_MINUTES[in_day]
        return text

    def format(self, ms: int) -> str:
        minute = ms // 60_000
        return (self.prefixes.get(minute) or self.prefix(minute)) + _TAILS[ms - minute * 60_000]


_Device = tuple[dict[str, Any], int, bool, int]  # template, device index, SDK?, clock skew (ms)


class _Population:
    """Users: a Zipf-weighted choice, and per-device record templates.

    Static fields come from a pool of personas (a persona is a place, plan, user properties and
    1-2 device profiles), built once; a user is a persona plus its own ``amplitude_id``,
    ``user_id`` and device ids, drawn from 40 random bytes per user. Building a user is cheap and
    deterministic, so only the heaviest users' templates are cached and memory stays bounded for
    millions of users.
    """

    _PERSONAS = 4096
    _CACHED_USERS = 8192
    _GENE = 40  # bytes per user: two device uuids (256 bits) and a persona pick (64 bits)

    def __init__(self, project_id: int, users: int, seed: int) -> None:
        rng = random.Random(f"{seed}/population")
        self._cum = array("d", accumulate(1.0 / rank**ZIPF_S for rank in range(1, users + 1)))
        self._total = self._cum[-1]
        self._last = users - 1
        self._device_cum = list(accumulate(weight for weight, _ in _DEVICES))
        self._place_cum = list(accumulate(place[0] for place in _PLACES))
        self._personas = [self._persona(rng, project_id) for _ in range(min(users, self._PERSONAS))]
        self._genes = rng.randbytes(self._GENE * users)
        self._cache: list[list[_Device] | None] = [None] * min(users, self._CACHED_USERS)

    def pick(self, r: float, r2: float) -> _Device:
        """A Zipf-chosen user's device: ``r`` picks the user, ``r2`` its device (80% the first)."""
        user = bisect(self._cum, r * self._total)
        if user > self._last:  # r * total rounded up to total
            user = self._last
        if user < len(self._cache):
            devices = self._cache[user]
            if devices is None:
                devices = self._cache[user] = self._build(user)
        else:
            devices = self._build(user)
        return devices[r2 >= 0.8] if len(devices) > 1 else devices[0]

    def _build(self, user: int) -> list[_Device]:
        offset = self._GENE * user
        gene = int.from_bytes(self._genes[offset : offset + self._GENE], "little")
        identified, protos = self._personas[(gene >> 256) % len(self._personas)]
        devices = []
        for slot, (proto, sdk, skew_ms) in enumerate(protos):
            template = proto.copy()
            template["amplitude_id"] = 10**12 + user
            template["device_id"] = _uuid4(gene >> (128 * slot))
            if identified:
                template["user_id"] = f"user-{user:06d}@example.com"
            devices.append((template, 2 * user + slot, sdk, skew_ms))
        return devices

    def _persona(
        self, rng: random.Random, project_id: int
    ) -> tuple[bool, list[tuple[dict[str, Any], bool, int]]]:
        rand = rng.random
        identified = rand() < 0.8
        place = _PLACES[bisect(self._place_cum, rand() * self._place_cum[-1])]
        _, country, region, city, dma, language, ip_prefix = place
        plan = _PLANS[int(rand() * len(_PLANS))]
        signup = datetime(2022, 1, 1, tzinfo=UTC) + timedelta(days=int(rand() * 1200))
        user_properties: dict[str, Any] = {}
        groups: dict[str, Any] = {}
        group_properties: dict[str, Any] = {}
        group_ids: dict[str, Any] = {}
        if identified:
            user_properties = {
                "plan": plan,
                "signup_date": f"{signup:%Y-%m-%d}",
                "cohort": f"{signup:%G-W%V}",
                "email_verified": rand() < 0.9,
            }
            if rand() < 0.3:
                user_properties["referral_source"] = _REFERRERS[2 + int(rand() * 3)]
            if plan in ("team", "enterprise") and rand() < 0.6:
                company = _COMPANIES[int(rand() * len(_COMPANIES))]
                groups = {"company": [company]}
                group_properties = {"company": {company: {}}}
                group_ids = {"1042": [2_357_000_000 + _COMPANIES.index(company)]}
        elif rand() < 0.5:
            user_properties = {"initial_referrer": _REFERRERS[int(rand() * len(_REFERRERS))]}

        protos = []
        for _ in range(1 if rand() < 0.7 else 2):
            profile = _DEVICES[bisect(self._device_cum, rand() * self._device_cum[-1])][1]
            library = profile["library"]
            sdk = library not in _SERVER_SIDE
            mobile = profile.get("platform") in ("iOS", "Android")
            proto = dict(_BASE)
            proto.update(profile)
            proto.update(
                {
                    "app": project_id,
                    "city": city,
                    "country": country,
                    "data": {
                        "path": "/batch" if library == "batch/1.0" else "/2/httpapi",
                        "group_first_event": {},
                        "group_ids": group_ids,
                    },
                    "data_type": "event",
                    "device_carrier": _CARRIERS[int(rand() * len(_CARRIERS))] if mobile else None,
                    "dma": dma,
                    "group_properties": group_properties,
                    "groups": groups,
                    "ip_address": f"{ip_prefix}{1 + int(rand() * 254)}" if sdk else None,
                    "language": language if sdk else None,
                    "region": region,
                    "start_version": profile.get("version_name"),
                    "user_properties": user_properties,
                }
            )
            # A few devices run a wrong clock, so their events get event_time corrected.
            skew_ms = 0
            if sdk and rand() < 0.03:
                skew_ms = int((70_000 + rand() * 3 * _HOUR_MS) * (1 if rand() < 0.5 else -1))
            protos.append((proto, sdk, skew_ms))
        return identified, protos


def _uuid4(n: int) -> str:
    """A version-4 UUID string from the low 128 bits of ``n``."""
    h = (n & _MASK128).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _page_viewed(rand: Callable[[], float]) -> dict[str, Any]:
    return {
        "path": _PATHS[int(rand() * len(_PATHS))],
        "referrer": _REFERRERS[int(rand() * len(_REFERRERS))],
        "load_time_ms": 80 + int(rand() * rand() * 3000),
    }


def _button_clicked(rand: Callable[[], float]) -> dict[str, Any]:
    return {
        "button_id": _BUTTONS[int(rand() * len(_BUTTONS))],
        "page": _PATHS[int(rand() * len(_PATHS))],
    }


def _product_viewed(rand: Callable[[], float]) -> dict[str, Any]:
    return {
        "product_id": f"sku-{int(rand() * 5000):05d}",
        "category": _CATEGORIES[int(rand() * len(_CATEGORIES))],
        "price": round(2.0 + rand() * 198.0, 2),
    }


def _search(rand: Callable[[], float]) -> dict[str, Any]:
    return {"query": _QUERIES[int(rand() * len(_QUERIES))], "results": int(rand() * 120)}


def _add_to_cart(rand: Callable[[], float]) -> dict[str, Any]:
    return {
        "product_id": f"sku-{int(rand() * 5000):05d}",
        "quantity": 1 + int(rand() * rand() * 4),
        "price": round(2.0 + rand() * 198.0, 2),
    }


def _checkout(rand: Callable[[], float]) -> dict[str, Any]:
    return {"items": 1 + int(rand() * 5), "cart_value": round(5.0 + rand() * 400.0, 2)}


def _purchase(rand: Callable[[], float]) -> dict[str, Any]:
    quantity = 1 + int(rand() * rand() * 4)
    price = round(2.0 + rand() * 198.0, 2)
    return {
        "order_id": f"ord-{int(rand() * 10**9):09d}",
        "quantity": quantity,
        "price": price,
        "revenue": round(quantity * price, 2),
        "currency": "USD",
        "coupon": "SPRING10" if rand() < 0.1 else None,
    }


def _method(rand: Callable[[], float]) -> dict[str, Any]:
    return {"method": _METHODS[int(rand() * len(_METHODS))]}


def _video(rand: Callable[[], float]) -> dict[str, Any]:
    return {"video_id": f"vid-{int(rand() * 800)}", "duration_s": round(5 + rand() * 900, 1)}


def _notification(rand: Callable[[], float]) -> dict[str, Any]:
    return {"channel": _CHANNELS[int(rand() * len(_CHANNELS))], "campaign": "weekly-digest"}


def _error(rand: Callable[[], float]) -> dict[str, Any]:
    code, message = _ERRORS[int(rand() * len(_ERRORS))]
    return {"code": code, "message": message, "fatal": False}


def _share(rand: Callable[[], float]) -> dict[str, Any]:
    return {"target": ("twitter", "email", "link")[int(rand() * 3)]}


def _empty(rand: Callable[[], float]) -> dict[str, Any]:
    return {}


_PROPERTIES: dict[str, Callable[[Callable[[], float]], dict[str, Any]]] = {
    "Page Viewed": _page_viewed,
    "Button Clicked": _button_clicked,
    "Product Viewed": _product_viewed,
    "Search": _search,
    "Add to Cart": _add_to_cart,
    "Login": _method,
    "Video Played": _video,
    "Notification Opened": _notification,
    "Checkout Started": _checkout,
    "Purchase": _purchase,
    "Error Shown": _error,
    "Share": _share,
    "Logout": _empty,
    "Sign Up": _method,
    "[Amplitude] Start Session": _empty,
}
