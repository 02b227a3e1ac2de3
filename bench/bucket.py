"""The recordings bucket over the years: what one user's finished audio costs to keep, day by
day, under a storage policy (Standard only; Autoclass; lifecycle SetStorageClass rules) and a
format (the WAV as assembled, or compacted). Pure arithmetic at the list prices of
docs/prices.md; bench/cost.py puts it beside the pipeline's cost.

The model: every day the user adds `hours_per_day` of audio in `objects_per_day` objects,
never read again (a recording read back under Autoclass returns to Standard; under lifecycle
rules it pays the class's retrieval fee). An object's class follows its age:

    Standard < 30 days <= Nearline < 90 days <= Coldline < 365 days <= Archive

which is both Autoclass's schedule for objects not read (with terminal class Archive, as
infra/storage.tf sets it) and the lifecycle rules that would imitate it.
"""

from __future__ import annotations

import dataclasses

# (first day of age, class) in order: Autoclass's transitions of an object never read.
CLASSES = ((0, "standard"), (30, "nearline"), (90, "coldline"), (365, "archive"))
# Autoclass leaves objects under 128 KiB in Standard, and charges no fee for them.
AUTOCLASS_MIN_BYTES = 128 * 1024
DAYS_PER_MONTH = 30
YEARS = 5  # the days summarize() computes: through month 60, the last of year 5


@dataclasses.dataclass(frozen=True)
class Usage:
    hours_per_day: float
    bytes_per_hour: float  # of the stored format
    objects_per_day: float

    @property
    def object_bytes(self) -> float:
        return self.hours_per_day * self.bytes_per_hour / self.objects_per_day


def _class_at(age_days: int, tiered: bool) -> str:
    if not tiered:
        return "standard"
    return [name for start, name in CLASSES if age_days >= start][-1]


def daily_costs(usage: Usage, policy: str, days: int, price: dict) -> list[dict[str, float]]:
    """Dollars by item for each day 0..days-1 of one user's bucket. `policy`: "standard",
    "autoclass" or "lifecycle" (SetStorageClass at the same ages as Autoclass)."""
    gb_per_day = usage.hours_per_day * usage.bytes_per_hour / 1e9
    gb_month = {
        "standard": price["gb_month"],
        "nearline": price["nearline_gb_month"],
        "coldline": price["coldline_gb_month"],
        "archive": price["archive_gb_month"],
    }
    transition_op = {c: price[f"class_a_{c}"] for c in ("nearline", "coldline", "archive")}
    # Autoclass does not move objects under 128 KiB; neither would anyone pay a Class A op per
    # tiny object to move it with a lifecycle rule.
    tiered = policy != "standard" and usage.object_bytes >= AUTOCLASS_MIN_BYTES
    out = []
    for day in range(days):
        cost = {"storage": 0.0, "class transitions": 0.0, "Autoclass fee": 0.0}
        for age in range(day + 1):  # the data added `age` days ago
            cost["storage"] += gb_per_day * gb_month[_class_at(age, tiered)] / DAYS_PER_MONTH
            if policy == "lifecycle" and tiered and age in (30, 90, 365):
                cost["class transitions"] += usage.objects_per_day * transition_op[_class_at(age, True)]
        if policy == "autoclass" and tiered:
            cost["Autoclass fee"] = (day + 1) * usage.objects_per_day * price["autoclass_object_month"] / DAYS_PER_MONTH
        out.append(cost)
    return out


def summarize(usage: Usage, policy: str, price: dict) -> dict:
    """The first year's total, the 13th month (the first of year 2) and the 60th, by item."""
    days = daily_costs(usage, policy, YEARS * 365, price)

    def total(span) -> dict[str, float]:
        keys = days[0].keys()
        return {k: sum(d[k] for d in span) for k in keys}

    def month(n: int) -> dict[str, float]:
        start = (n - 1) * DAYS_PER_MONTH
        return total(days[start : start + DAYS_PER_MONTH])

    return {
        "first_year": total(days[:365]),
        "month_13": month(13),
        "month_60": month(60),
        "gb_after_first_year": round(365 * usage.hours_per_day * usage.bytes_per_hour / 1e9, 1),
    }
