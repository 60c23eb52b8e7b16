"""Vocabulary and vectorised helpers shared by the generator modules."""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable

import numpy as np

DAY = 86_400
HOUR = 3_600

# event type codes (identity events)
SIGNUP, LOGIN, ADD_PM, PROFILE, BOOKING = 0, 1, 2, 3, 4
EVENT_TYPES = np.array(["signup", "login", "add_payment_method", "profile_update", "booking"], dtype=object)

# roles
LEGIT, RING, MULTI, SOFT = 0, 1, 2, 3  # SOFT: a ring that shares no hard identifier

COUNTRIES = np.array(["AE", "SA", "PK", "EG", "JO"], dtype=object)
COUNTRY_W = np.array([0.35, 0.30, 0.15, 0.12, 0.08])
# E.164 layout per country: country code, mobile prefix, digits after the prefix
PHONE_FMT = {
    "AE": ("971", "5", 8),
    "SA": ("966", "5", 8),
    "PK": ("92", "3", 9),
    "EG": ("20", "1", 9),
    "JO": ("962", "7", 8),
    "US": ("1", "", 10),  # VoIP numbers used by fraudsters
    "GB": ("44", "7", 9),
}

FIRST = ["ahmed", "mohammed", "ali", "omar", "youssef", "khalid", "hassan", "ibrahim", "mahmoud", "tariq", "faisal", "saeed", "rashid", "hamza", "bilal", "usman", "imran", "zain", "karim", "nabil", "samir", "walid", "adel", "fahad", "sultan", "majid", "nasser", "salman", "yasir", "irfan", "fatima", "aisha", "mariam", "sara", "noor", "layla", "huda", "amina", "hana", "rania", "dina", "salma", "zainab", "yasmin", "rana", "lina", "reem", "maha", "nadia", "sana", "ayesha", "hira", "mehwish", "farah", "lubna", "ghada", "john", "david", "michael", "priya", "rahul", "anjali"]
LAST = ["khan", "ahmed", "ali", "hussain", "hassan", "ibrahim", "mahmoud", "saleh", "haddad", "nasser", "rahman", "malik", "qureshi", "siddiqui", "shaikh", "chaudhry", "butt", "farouk", "mansour", "hamdan", "khalil", "aziz", "said", "sharif", "kamal", "fahmy", "mostafa", "abdallah", "othman", "yousef", "zaidi", "rizvi", "mirza", "baig", "awan", "abbasi", "hashmi", "alnaqbi", "almansoori", "alshamsi", "alharbi", "alotaibi", "alqahtani", "alghamdi", "alzahrani", "ghanem", "obeidat", "tamimi", "smith", "patel", "sharma", "nair", "menon"]
DOMAINS = np.array(
    ["gmail.com", "hotmail.com", "yahoo.com", "outlook.com", "icloud.com", "live.com", "emirates.net.ae"],
    dtype=object,
)
DOMAIN_W = np.array([0.55, 0.12, 0.10, 0.09, 0.08, 0.03, 0.03])
DISPOSABLE = np.array(
    ["mailinator.com", "yopmail.com", "guerrillamail.com", "tempmail.dev", "10minutemail.com",
     "sharklasers.com", "trashmail.io", "gmail.com", "proton.me"],
    dtype=object,
)

# first octets: residential/mobile ISPs of the region vs datacenter/proxy ranges
RESIDENTIAL_OCTETS = np.array([2, 5, 31, 37, 41, 46, 78, 82, 83, 86, 91, 94, 102, 105, 151, 156, 176, 197, 212, 213])
CARRIER_OCTETS = np.array([5, 37, 86, 94, 176, 188, 217])
DATACENTER_OCTETS = np.array([23, 45, 64, 104, 107, 138, 139, 142, 146, 157, 159, 165, 167, 178, 192, 206, 209])
IPV6_PREFIXES = ["2001:8f8", "2a02:2ab8", "2a00:f28", "2a01:9700", "2c0f:fc88"]

RING_RULES = np.array(["velocity_cards", "shared_device", "new_account_velocity", "datacenter_ip"], dtype=object)
MULTI_RULES = np.array(["shared_device", "promo_abuse", "shared_card"], dtype=object)
ATO_RULES = np.array(["ato_new_device", "profile_change_velocity"], dtype=object)
NONFRAUD_RULES = np.array(["chargeback_ratio", "driver_report"], dtype=object)

# activity by local hour (UTC+3 is close enough for the whole region)
_LOCAL_HOUR_W = np.array(
    [2.0, 1.2, 0.7, 0.5, 0.4, 0.5, 1.0, 2.2, 3.5, 3.6, 3.2, 3.4, 3.8, 3.6, 3.3, 3.3, 3.6, 4.2, 4.8, 5.0,
     4.8, 4.3, 3.6, 2.8]
)
HOUR_W_UTC = np.roll(_LOCAL_HOUR_W, -3) / _LOCAL_HOUR_W.sum()


def rng_for(seed: int, name: str) -> np.random.Generator:
    """One independent stream per component, so changing one scenario does not reshuffle the others."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def lognormal(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(size))


def recency_times(rng: np.random.Generator, n: int, lo: int, hi: int, growth: float) -> np.ndarray:
    """Creation times in [lo, hi) with density growing like exp(growth * x): recent is more likely."""
    u = rng.random(n)
    x = u if growth == 0 else np.log1p(u * np.expm1(growth)) / growth
    return lo + np.minimum((x * (hi - lo)).astype(np.int64), hi - lo - 1)


def diurnal(rng: np.random.Generator, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Move each time to a day-shaped hour of the same day when that stays inside [lo, hi)."""
    hour = rng.choice(24, size=t.size, p=HOUR_W_UTC)
    t2 = (t // DAY) * DAY + hour * HOUR + rng.integers(0, HOUR, size=t.size)
    ok = (t2 >= lo) & (t2 < hi)
    return np.where(ok, t2, t)


def draw_unique(sampler: Callable[[int], np.ndarray], n: int, used: set) -> np.ndarray:
    """n values from sampler that are new to ``used`` (updated): identifiers must not collide by chance."""
    out: list[int] = []
    while len(out) < n:
        for v in sampler((n - len(out)) * 11 // 10 + 8).tolist():
            if v not in used:
                used.add(v)
                out.append(v)
                if len(out) == n:
                    break
    return np.array(out, dtype=np.int64)


def ipv4_sampler(rng: np.random.Generator, octets: np.ndarray) -> Callable[[int], np.ndarray]:
    def sample(k: int) -> np.ndarray:
        first = rng.choice(octets, size=k).astype(np.int64)
        mid = rng.integers(0, 1 << 16, size=k, dtype=np.int64)
        last = rng.integers(1, 255, size=k, dtype=np.int64)
        return (first << 24) | (mid << 8) | last

    return sample


def ipv4_strings(v: np.ndarray) -> list[str]:
    return [f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}" for x in v.tolist()]


def ipv6_strings(rng: np.random.Generator, n: int, used: set) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        pre = IPV6_PREFIXES[int(rng.integers(len(IPV6_PREFIXES)))]
        groups = rng.integers(0, 1 << 16, size=6).tolist()
        s = str(ipaddress.IPv6Address(f"{pre}:" + ":".join(f"{g:x}" for g in groups)))
        if s not in used:
            used.add(s)
            out.append(s)
    return out


def hex_strings(v: np.ndarray, prefix: str = "") -> list[str]:
    return [f"{prefix}{x & 0xFFFFFFFFFFFFFFFF:016x}" for x in v.tolist()]


def random_tokens(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Random [a-z0-9] strings: the local parts of throwaway emails."""
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"), dtype="<U1")
    idx = rng.integers(0, alphabet.size, size=(n, length))
    idx[:, 0] = rng.integers(0, 26, size=n)  # start with a letter
    return np.ascontiguousarray(alphabet[idx]).view(f"<U{length}").ravel().astype(object)


def fixed_ids(prefix: str, nums: np.ndarray, width: int) -> np.ndarray:
    """``prefix`` + zero-padded decimal, built on bytes: a million ids in milliseconds."""
    nums = np.asarray(nums, dtype=np.int64)
    p = np.frombuffer(prefix.encode(), dtype=np.uint8)
    buf = np.empty((nums.size, p.size + width), dtype=np.uint8)
    buf[:, : p.size] = p
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    buf[:, p.size :] = (nums[:, None] // powers) % 10 + 48
    return buf.view(f"S{p.size + width}").ravel().astype(f"U{p.size + width}").astype(object)


class Pool:
    """Interned identifier strings of one kind; events hold int codes (-1 = absent) until output."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.values: list[str] = []
        self.roles: list[str] = []

    def add(self, values: list[str] | np.ndarray, role: str) -> np.ndarray:
        start = len(self.values)
        self.values.extend(list(values))
        self.roles.extend([role] * (len(self.values) - start))
        return np.arange(start, len(self.values), dtype=np.int64)

    def array(self) -> np.ndarray:
        return np.array([*self.values, None], dtype=object)  # code -1 picks the trailing None

    def __len__(self) -> int:
        return len(self.values)
