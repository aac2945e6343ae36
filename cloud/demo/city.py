"""The demo world of the brief: its accounts, 10 hosts, 50 chargers across Indian metros,
100 drivers and 200 past bookings with their sessions, telemetry, payments and reviews.

``chargemitra-cloud seed-city`` calls :func:`seed_city` (development only). The brief's demo
accounts (``admin@chargemitra.com`` / ``admin123``, ``host@example.com`` / ``host123``,
``renter@example.com`` / ``renter123``) are among them: the host owns the two simulated
sites' chargers (:data:`DEMO_SITES`), the renter is the driver of the story. Every other host
signs in with ``host123`` and every other driver with ``renter123``.

History is generated from a fixed seed, so every machine shows the same city. Money goes
through the ledger as the settle job writes it (:func:`cloud.ledger.entries.settle_session`:
capture, bill, refund; the bill from :func:`cloud.billing.quote.price`), so balances,
earnings and the admin's figures agree with the rows.

Idempotent: the whole city is written in one transaction under an advisory lock, and a city
already there (its first charger's QR code) is left as it is — running it twice adds nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, KycStatus, Role, User, UserRole
from cloud.accounts.passwords import hash_password
from cloud.billing.quote import Tariff, Usage, price, window_usage
from cloud.bookings.models import Booking, BookingStatus
from cloud.chargers.availability import END_OF_DAY
from cloud.chargers.models import (
    AvailabilityWindow,
    Charger,
    Connector,
    CurrentType,
    ModerationStatus,
    PricingMode,
)
from cloud.chargers.qr import ALPHABET, CODE_CHARS
from cloud.devices.models import Device, DeviceStatus
from cloud.ledger.entries import settle_session
from cloud.ledger.service import post_all
from cloud.payments.models import Payment, PaymentStatus, Refund, RefundStatus
from cloud.reviews.models import Review
from cloud.sessions.models import BillingState, ChargingSession, SessionState
from cloud.telemetry.models import telemetry, telemetry_rollup_pending
from protocols.enums import ConnectorType, CredentialKind, StopReason
from protocols.ids import new_ulid

#: The brief's demo accounts (seed/chargemitra-brief.md, "Test Accounts"): email, password,
#: role, phone, name.
BRIEF_ACCOUNTS = (
    ("admin@chargemitra.com", "admin123", Role.ADMIN, "+919600000001", "Aditi Rao (admin)"),
    ("host@example.com", "host123", Role.HOST, "+919600000002", "Rohan Mehta"),
    ("renter@example.com", "renter123", Role.DRIVER, "+919600000003", "Priya Sharma"),
)
HOST_EMAIL = "host@example.com"
DRIVER_EMAIL = "renter@example.com"
HOSTS = 10
CHARGERS = 50
DRIVERS = 100
BOOKINGS = 200
#: Bookings in the past this many days.
HISTORY_DAYS = 60
SEED = 20
_LOCK_KEY = "chargemitra-demo-city"


@dataclass(frozen=True, slots=True)
class Place:
    locality: str
    street: str
    city: str
    state: str
    pincode: str
    lat: float
    lon: float


def _p(*fields: str | float) -> Place:
    locality, street, city, state, pincode, lat, lon = fields
    return Place(
        str(locality), str(street), str(city), str(state), str(pincode), float(lat), float(lon)
    )


_KA, _MH, _DL = "Karnataka", "Maharashtra", "Delhi"
_TN, _TG, _WB, _GJ = "Tamil Nadu", "Telangana", "West Bengal", "Gujarat"
#: Where the 50 chargers stand. The first two are the simulated sites (:data:`DEMO_SITES`).
PLACES = (
    _p("Koramangala 4th Block", "80 Feet Road", "Bengaluru", _KA, "560034", 12.9352, 77.6245),
    _p("HSR Layout Sector 1", "27th Main Road", "Bengaluru", _KA, "560102", 12.9121, 77.6446),
    _p("Indiranagar", "100 Feet Road", "Bengaluru", _KA, "560038", 12.9719, 77.6412),
    _p("Whitefield", "ITPL Main Road", "Bengaluru", _KA, "560066", 12.9698, 77.7500),
    _p("Jayanagar 4th Block", "11th Main Road", "Bengaluru", _KA, "560011", 12.9250, 77.5838),
    _p("Malleshwaram", "Sampige Road", "Bengaluru", _KA, "560003", 12.9982, 77.5700),
    _p("Electronic City Phase 1", "Hosur Road", "Bengaluru", _KA, "560100", 12.8452, 77.6602),
    _p("Hebbal", "Bellary Road", "Bengaluru", _KA, "560024", 13.0358, 77.5970),
    _p("Bandra West", "Hill Road", "Mumbai", _MH, "400050", 19.0544, 72.8340),
    _p("Powai", "Hiranandani Gardens", "Mumbai", _MH, "400076", 19.1176, 72.9060),
    _p("Lower Parel", "Senapati Bapat Marg", "Mumbai", _MH, "400013", 18.9953, 72.8300),
    _p("Andheri West", "Lokhandwala Complex Road", "Mumbai", _MH, "400053", 19.1364, 72.8296),
    _p("Goregaon East", "Western Express Highway", "Mumbai", _MH, "400063", 19.1663, 72.8526),
    _p("Chembur", "Sion-Trombay Road", "Mumbai", _MH, "400071", 19.0522, 72.9005),
    _p("Thane West", "Ghodbunder Road", "Thane", _MH, "400601", 19.2183, 72.9781),
    _p("Vashi", "Palm Beach Road", "Navi Mumbai", _MH, "400703", 19.0771, 72.9986),
    _p("Connaught Place", "Barakhamba Road", "New Delhi", _DL, "110001", 28.6315, 77.2167),
    _p("Saket", "Press Enclave Marg", "New Delhi", _DL, "110017", 28.5245, 77.2066),
    _p("Dwarka Sector 10", "Sector 10 Market Road", "New Delhi", _DL, "110075", 28.5810, 77.0580),
    _p("Hauz Khas", "Aurobindo Marg", "New Delhi", _DL, "110016", 28.5494, 77.2001),
    _p("Rajouri Garden", "Najafgarh Road", "New Delhi", _DL, "110027", 28.6492, 77.1226),
    _p("Lajpat Nagar", "Ring Road", "New Delhi", _DL, "110024", 28.5677, 77.2433),
    _p("Sector 18", "Atta Market Road", "Noida", "Uttar Pradesh", "201301", 28.5708, 77.3260),
    _p("DLF Cyber City", "DLF Phase 2", "Gurugram", "Haryana", "122002", 28.4950, 77.0895),
    _p("T Nagar", "Usman Road", "Chennai", _TN, "600017", 13.0418, 80.2341),
    _p("Adyar", "Lattice Bridge Road", "Chennai", _TN, "600020", 13.0012, 80.2565),
    _p("Anna Nagar", "2nd Avenue", "Chennai", _TN, "600040", 13.0850, 80.2101),
    _p("Velachery", "Velachery Main Road", "Chennai", _TN, "600042", 12.9815, 80.2180),
    _p("Sholinganallur", "Old Mahabalipuram Road", "Chennai", _TN, "600119", 12.9010, 80.2279),
    _p("Nungambakkam", "Khader Nawaz Khan Road", "Chennai", _TN, "600034", 13.0569, 80.2425),
    _p("HITEC City", "Madhapur Main Road", "Hyderabad", _TG, "500081", 17.4435, 78.3772),
    _p("Gachibowli", "Old Mumbai Highway", "Hyderabad", _TG, "500032", 17.4401, 78.3489),
    _p("Banjara Hills", "Road No. 12", "Hyderabad", _TG, "500034", 17.4156, 78.4347),
    _p("Jubilee Hills", "Road No. 36", "Hyderabad", _TG, "500033", 17.4326, 78.4071),
    _p("Kondapur", "Botanical Garden Road", "Hyderabad", _TG, "500084", 17.4700, 78.3570),
    _p("Begumpet", "Prakash Nagar Road", "Hyderabad", _TG, "500016", 17.4440, 78.4622),
    _p("Kukatpally", "KPHB Road No. 1", "Hyderabad", _TG, "500072", 17.4948, 78.3996),
    _p("Koregaon Park", "North Main Road", "Pune", _MH, "411001", 18.5362, 73.8940),
    _p("Baner", "Baner Road", "Pune", _MH, "411045", 18.5590, 73.7868),
    _p("Hinjewadi Phase 1", "Rajiv Gandhi Infotech Park", "Pune", _MH, "411057", 18.5913, 73.7389),
    _p("Kothrud", "Karve Road", "Pune", _MH, "411038", 18.5074, 73.8077),
    _p("Viman Nagar", "Nagar Road", "Pune", _MH, "411014", 18.5679, 73.9143),
    _p("Salt Lake Sector V", "College More", "Kolkata", _WB, "700091", 22.5726, 88.4339),
    _p("Park Street", "Park Street", "Kolkata", _WB, "700016", 22.5527, 88.3526),
    _p("New Town", "Action Area I", "Kolkata", _WB, "700156", 22.5806, 88.4616),
    _p("Ballygunge", "Gariahat Road", "Kolkata", _WB, "700019", 22.5280, 88.3659),
    _p("Navrangpura", "CG Road", "Ahmedabad", _GJ, "380009", 23.0365, 72.5611),
    _p("Bodakdev", "Sarkhej-Gandhinagar Highway", "Ahmedabad", _GJ, "380054", 23.0395, 72.5120),
    _p("Satellite", "Ramdev Nagar Road", "Ahmedabad", _GJ, "380015", 23.0300, 72.5176),
    _p("Prahlad Nagar", "Corporate Road", "Ahmedabad", _GJ, "380015", 23.0120, 72.5108),
)
#: The simulated sites of ``make demo``: (name, place index, transport). Their chargers
#: belong to the brief's host and have no device until an agent claims a pairing code.
DEMO_SITES = (
    ("Koramangala wallbox (Modbus TCP site)", 0, "tcp"),
    ("HSR Layout garage (RS-485 RTU site)", 1, "rtu"),
)
_FIRST = (
    "Aarav",
    "Vivaan",
    "Aditya",
    "Ananya",
    "Diya",
    "Ishaan",
    "Kavya",
    "Meera",
    "Arjun",
    "Sneha",
    "Rahul",
    "Pooja",
    "Karthik",
    "Lakshmi",
    "Farhan",
    "Zoya",
    "Gurpreet",
    "Harsh",
    "Neha",
    "Sanjay",
    "Deepa",
    "Vikram",
    "Nisha",
    "Suresh",
    "Anjali",
)
_LAST = (
    "Sharma",
    "Iyer",
    "Reddy",
    "Nair",
    "Patel",
    "Banerjee",
    "Singh",
    "Khan",
    "Menon",
    "Desai",
    "Gupta",
    "Rao",
    "Chatterjee",
    "Joshi",
    "Kulkarni",
    "Das",
    "Pillai",
)
_AMENITIES = ("parking", "cctv", "covered", "restroom", "cafe", "wifi", "24x7-security")
_REVIEWS = (
    (5, "Smooth unlock with the QR code, host was very helpful."),
    (5, "Charged while I had lunch nearby. Clean and well lit."),
    (4, "Good spot, a little hard to find the first time. Follow the signboard."),
    (4, "Worked as expected. Parking is tight during office hours."),
    (5, "Best value charger in the area, the live meter is handy."),
    (3, "Charging was fine but the bay was blocked when I arrived."),
    (4, "Covered parking, helpful security guard."),
    (5, "Reliable every time. Booking and payment took a minute."),
)
# (connector type, current, power W, pricing mode, per kWh paise, per hour paise)
_KINDS = (
    (ConnectorType.TYPE_2, CurrentType.AC, 7400, PricingMode.PER_KWH, 1800, 0),
    (ConnectorType.TYPE_2, CurrentType.AC, 11000, PricingMode.PER_KWH, 1900, 0),
    (ConnectorType.CCS2, CurrentType.DC, 30000, PricingMode.PER_KWH, 2200, 0),
    (ConnectorType.BHARAT_AC_001, CurrentType.AC, 3300, PricingMode.PER_HOUR, 0, 6000),
    (ConnectorType.SOCKET_16A, CurrentType.AC, 3300, PricingMode.PER_HOUR, 0, 4500),
)


@dataclass(frozen=True, slots=True)
class CitySummary:
    """What the city holds after seeding, and whether this run wrote it."""

    created: bool
    hosts: int
    chargers: int
    drivers: int
    bookings: int
    #: The simulated sites' chargers, in :data:`DEMO_SITES` order.
    demo_charger_ids: tuple[str, ...]


def _code(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(CODE_CHARS))


async def _user(
    db: AsyncSession,
    *,
    email: str,
    phone: str,
    name: str,
    password_hash: str,
    role: Role,
    now: datetime,
) -> User:
    user = await db.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(
            id=new_ulid(),
            email=email,
            phone=phone,
            name=name,
            password_hash=password_hash,
            phone_verified_at=now,
        )
        db.add(user)
        await db.flush()
    if await db.get(UserRole, (user.id, role)) is None:
        db.add(UserRole(user_id=user.id, role=role))
    return user


async def _host(db: AsyncSession, user: User, now: datetime) -> Host:
    host = await db.scalar(select(Host).where(Host.user_id == user.id))
    if host is None:
        host = Host(
            user_id=user.id,
            display_name=user.name,
            kyc_status=KycStatus.VERIFIED,
            kyc_verified_at=now,
        )
        db.add(host)
        await db.flush()
    return host


async def _demo_chargers(db: AsyncSession, rng_codes: list[str]) -> tuple[str, ...]:
    ids = await db.scalars(
        select(Charger.id).where(Charger.qr_code.in_(rng_codes[: len(DEMO_SITES)]))
    )
    by_code = {
        c.qr_code: c.id for c in await db.scalars(select(Charger).where(Charger.id.in_(list(ids))))
    }
    return tuple(by_code[code] for code in rng_codes[: len(DEMO_SITES)])


async def seed_city(db: AsyncSession, *, now: datetime) -> CitySummary:
    """Write the city in the caller's transaction unless it is there; say what it holds."""
    await db.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK_KEY})
    rng = random.Random(SEED)  # noqa: S311 -- reproducible demo data, not a secret
    codes = [_code(rng) for _ in range(CHARGERS)]
    if await db.scalar(select(Charger.id).where(Charger.qr_code == codes[0])) is not None:
        return CitySummary(
            created=False,
            hosts=HOSTS,
            chargers=CHARGERS,
            drivers=DRIVERS,
            bookings=BOOKINGS,
            demo_charger_ids=await _demo_chargers(db, codes),
        )

    hashes = {password: hash_password(password) for _, password, *_ in BRIEF_ACCOUNTS}
    brief = {}
    for email, password, role, phone, name in BRIEF_ACCOUNTS:
        brief[email] = await _user(
            db,
            email=email,
            phone=phone,
            name=name,
            password_hash=hashes[password],
            role=role,
            now=now,
        )

    def person() -> str:
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"

    hosts = [await _host(db, brief[HOST_EMAIL], now)]
    for i in range(1, HOSTS):
        user = await _user(
            db,
            email=f"host{i:02d}@demo.chargemitra.in",
            phone=f"+91950000{i:04d}",
            name=person(),
            password_hash=hashes["host123"],
            role=Role.HOST,
            now=now,
        )
        hosts.append(await _host(db, user, now))
    drivers = [brief[DRIVER_EMAIL]]
    for i in range(1, DRIVERS):
        drivers.append(
            await _user(
                db,
                email=f"driver{i:03d}@demo.chargemitra.in",
                phone=f"+91940000{i:04d}",
                name=person(),
                password_hash=hashes["renter123"],
                role=Role.DRIVER,
                now=now,
            )
        )

    chargers: list[tuple[Charger, Connector, Host, str | None]] = []
    for index, (place, code) in enumerate(zip(PLACES, codes, strict=True)):
        host = hosts[0] if index < len(DEMO_SITES) else hosts[index % HOSTS]
        kind = _KINDS[0] if index < len(DEMO_SITES) else rng.choice(_KINDS)
        connector_type, current, power_w, mode, per_kwh, per_hour = kind
        device_id: str | None = None
        if index >= len(DEMO_SITES):
            # A field device for the history's sessions (offline now: not simulated).
            device_id = f"city-{code.lower()}"
            db.add(
                Device(
                    id=device_id,
                    host_id=host.id,
                    status=DeviceStatus.ACTIVE,
                    agent_version="0.1.0",
                    online=False,
                )
            )
            await db.flush()
        name = (
            DEMO_SITES[index][0]
            if index < len(DEMO_SITES)
            else f"{place.locality} {rng.choice(('EV point', 'charging bay', 'wallbox', 'garage charger'))}"  # noqa: E501
        )
        charger = Charger(
            host_id=host.id,
            device_id=device_id,
            name=name,
            description=f"{power_w / 1000:g} kW {connector_type.value} in {place.locality}.",
            address=f"{rng.randint(1, 220)}, {place.street}, {place.locality}",
            city=place.city,
            state=place.state,
            pincode=place.pincode,
            latitude=round(place.lat + rng.uniform(-0.002, 0.002), 6),
            longitude=round(place.lon + rng.uniform(-0.002, 0.002), 6),
            pricing_mode=mode,
            price_per_kwh_paise=per_kwh,
            price_per_hour_paise=per_hour,
            session_fee_paise=rng.choice((0, 0, 500, 1000)),
            min_charge_paise=0,
            amenities=sorted(rng.sample(_AMENITIES, rng.randint(1, 3))),
            instant_book=index < len(DEMO_SITES) or rng.random() < 0.8,
            moderation_status=ModerationStatus.APPROVED,
            is_listed=True,
            qr_code=code,
        )
        db.add(charger)
        await db.flush()
        connector = Connector(
            charger_id=charger.id,
            number=1,
            type=connector_type,
            current=current,
            max_power_w=power_w,
        )
        db.add(connector)
        for weekday in range(7):
            draw = rng.random()  # drawn for every charger, so the rest of the city stays put
            # The simulated sites are open round the clock: `make demo` and its story must
            # work at any hour (a site open 06:00-22:00 IST refused the story's booking from
            # 16:30 UTC, and the demo test failed every evening).
            always = index < len(DEMO_SITES) or draw < 0.6
            opens, closes = (time(0, 0), END_OF_DAY) if always else (time(6, 0), time(22, 0))
            db.add(
                AvailabilityWindow(
                    charger_id=charger.id, weekday=weekday, opens_at=opens, closes_at=closes
                )
            )
        await db.flush()
        chargers.append((charger, connector, host, device_id))

    await _history(db, rng, chargers[len(DEMO_SITES) :], drivers, now)
    return CitySummary(
        created=True,
        hosts=len(hosts),
        chargers=len(chargers),
        drivers=len(drivers),
        bookings=BOOKINGS,
        demo_charger_ids=tuple(c.id for c, *_ in chargers[: len(DEMO_SITES)]),
    )


async def _history(  # noqa: PLR0915 -- one booking's rows, written in order
    db: AsyncSession,
    rng: random.Random,
    chargers: list[tuple[Charger, Connector, Host, str | None]],
    drivers: list[User],
    now: datetime,
) -> None:
    """:data:`BOOKINGS` completed bookings in the last :data:`HISTORY_DAYS` days, one a day
    at most per charger, each with its session, readings, payment, ledger and maybe a review."""
    used: set[tuple[str, int]] = set()
    meter_wh: dict[str, int] = {}
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    readings: list[dict[str, object]] = []
    for _ in range(BOOKINGS):
        while True:
            charger, connector, host, device_id = rng.choice(chargers)
            day = rng.randint(1, HISTORY_DAYS)
            if (charger.id, day) not in used:
                used.add((charger.id, day))
                break
        assert device_id is not None  # history is on field devices only
        driver = rng.choice(drivers)
        start = (
            today
            - timedelta(days=day)
            + timedelta(hours=rng.randint(1, 16), minutes=15 * rng.randint(0, 3))
        )
        window = timedelta(minutes=15 * rng.randint(4, 12))
        end = start + window
        tariff = Tariff.from_charger(charger)
        booked = price(tariff, window_usage(window, connector.max_power_w)).total_paise
        booking = Booking(
            user_id=driver.id,
            charger_id=charger.id,
            connector_id=connector.id,
            period=Range(start, end, bounds="[)"),
            status=BookingStatus.COMPLETED,
            amount_paise=booked,
            decided_at=start - timedelta(days=1),
        )
        db.add(booking)
        await db.flush()

        started = start + timedelta(minutes=rng.randint(1, 10))
        charging = (end - started) * rng.uniform(0.5, 0.95)
        stopped = started + charging
        power_w = connector.max_power_w * rng.uniform(0.85, 0.98)
        energy_wh = int(power_w * charging.total_seconds() / 3600)
        meter_start = meter_wh.get(device_id, rng.randint(100_000, 2_000_000))
        meter_wh[device_id] = meter_start + energy_wh
        quote = price(tariff, Usage(duration=charging, energy_wh=energy_wh))
        session = ChargingSession(
            device_id=device_id,
            device_session_id=new_ulid(),
            connector_number=1,
            charger_id=charger.id,
            booking_id=booking.id,
            user_id=driver.id,
            credential_kind=CredentialKind.TOKEN,
            credential_ref=f"unlock:{new_ulid()}",
            state=SessionState.STOPPED,
            started_at=started,
            stopped_at=stopped,
            meter_start_wh=meter_start,
            meter_stop_wh=meter_start + energy_wh,
            energy_wh=energy_wh,
            power_w=0.0,
            stop_reason=rng.choice(
                (StopReason.REMOTE, StopReason.EV_DISCONNECTED, StopReason.LOCAL)
            ),
            last_event_seq=1,
            events_received=2,
            billing_state=BillingState.SETTLED,
            amount_paise=quote.total_paise,
        )
        db.add(session)
        await db.flush()
        refund_paise = booked - quote.total_paise
        payment = Payment(
            user_id=driver.id,
            booking_id=booking.id,
            session_id=session.id,
            provider="dummy",
            provider_order_id=f"order_demo{new_ulid()}",
            provider_payment_id=f"pay_demo{new_ulid()}",
            amount_paise=booked,
            captured_paise=booked,
            status=PaymentStatus.PARTIALLY_REFUNDED if refund_paise else PaymentStatus.CAPTURED,
        )
        db.add(payment)
        await db.flush()
        refund_id: str | None = None
        if refund_paise:
            refund = Refund(
                payment_id=payment.id,
                amount_paise=refund_paise,
                provider_refund_id=f"rfnd_demo{new_ulid()}",
                status=RefundStatus.PROCESSED,
                reason="unused prepayment",
            )
            db.add(refund)
            await db.flush()
            refund_id = refund.id
        _, txns = settle_session(
            session_id=session.id,
            payment_id=payment.id,
            driver_id=driver.id,
            host_id=host.id,
            authorized_paise=booked,
            quote=quote,
            host_gst_registered=False,
            partial_capture=False,
            refund_id=refund_id,
        )
        await post_all(db, txns)

        steps = max(2, int(charging / timedelta(minutes=10)))
        for step in range(steps + 1):
            at = started + charging * step / steps
            for quantity, value in (
                ("energy_import_wh", meter_start + energy_wh * step / steps),
                ("power_w", power_w if step < steps else 0.0),
            ):
                readings.append(
                    {
                        "device_id": device_id,
                        "meter_id": "m1",
                        "ts": at,
                        "quantity": quantity,
                        "value": value,
                        "seq": step,
                        "clock_synced": True,
                    }
                )

        if rng.random() < 0.6:
            rating, body = rng.choice(_REVIEWS)
            db.add(
                Review(
                    charger_id=charger.id,
                    user_id=driver.id,
                    session_id=session.id,
                    rating=rating,
                    body=body,
                )
            )
            await db.execute(
                update(Charger)
                .where(Charger.id == charger.id)
                .values(
                    rating_sum=Charger.rating_sum + rating,
                    rating_count=Charger.rating_count + 1,
                )
            )
    await db.execute(insert(telemetry), readings)
    # The 15-minute rollup (charts) picks these buckets up like an ingest batch's.
    buckets = {(r["device_id"], _bucket(r["ts"])) for r in readings}  # type: ignore[arg-type]
    await db.execute(
        insert(telemetry_rollup_pending),
        [{"device_id": d, "bucket": b} for d, b in sorted(buckets)],
    )
    await db.flush()


def _bucket(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)
