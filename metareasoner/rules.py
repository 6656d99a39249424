"""Operator-desired outcomes (docs/FORMULATION.md section 9, pre-strategy intervention).

Operators add, change or remove NSE rules at run time; every change makes a new version
of the rule set and earlier versions stay readable, so runs can say which rules they
used. Operators may also declare a desired outcome for chosen proxy robots ("carry no
big shelf through corridor-a"): those robots replan with it as a local penalty.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from planner.maps import parse_rule
from planner.problem import Feature
from planner.world import NSERule, World

from .penalty import NSEPenalty


class RuleError(ValueError):
    """A rule or outcome an operator sent that cannot be used; `field` says which part."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True)
class RuleSetVersion:
    version: int
    rules: tuple[NSERule, ...]
    min_count: int
    note: str = ""


def validate_rule(spec: Mapping[str, Any] | NSERule, zone_names: tuple[str, ...], feature: Feature) -> NSERule:
    """An NSERule from a mapping with zone (None or '*' = every zone), feature, value, weight, sensitivity."""
    if isinstance(spec, NSERule):
        spec = spec.__dict__
    missing = [k for k in ("feature", "value", "weight", "sensitivity") if k not in spec]
    if missing:
        raise RuleError(f"missing {', '.join(missing)}", missing[0])
    zone = spec.get("zone") or "*"
    for key in ("weight", "sensitivity"):
        if isinstance(spec[key], bool) or not isinstance(spec[key], (int, float)) or not np.isfinite(spec[key]):
            raise RuleError(f"must be a finite number, got {spec[key]!r}", key)
    return parse_rule(str(zone), str(spec["feature"]), str(spec["value"]), float(spec["weight"]),
                      float(spec["sensitivity"]), feature, zone_names,
                      lambda message, field: RuleError(message, field),
                      {k: k for k in ("zone", "feature", "value", "weight", "sensitivity")})


class RuleBook:
    """The versioned NSE rule set of one map. Version 1 is the map's own rules."""

    def __init__(self, world: World, feature: Feature) -> None:
        self.world, self.feature = world, feature
        self._versions = [RuleSetVersion(1, tuple(world.rules), world.min_count, "rules of the map")]

    @property
    def current(self) -> RuleSetVersion:
        return self._versions[-1]

    @property
    def versions(self) -> tuple[RuleSetVersion, ...]:
        return tuple(self._versions)

    def get(self, version: int | None = None) -> RuleSetVersion:
        if version is None:
            return self.current
        if not 1 <= version <= len(self._versions):
            raise RuleError(f"no rule set version {version}; versions are 1..{len(self._versions)}", "version")
        return self._versions[version - 1]

    def replace_rules(self, rules: Iterable[Mapping[str, Any] | NSERule], min_count: int | None = None,
                      note: str = "") -> RuleSetVersion:
        """A new version holding exactly `rules` (validated as a whole: nothing changes on error)."""
        checked = tuple(validate_rule(r, self.world.zone_names, self.feature) for r in rules)
        count = self.current.min_count if min_count is None else min_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise RuleError(f"must be an integer >= 2 (a robot alone causes no NSE), got {count!r}", "min_count")
        self._versions.append(RuleSetVersion(len(self._versions) + 1, checked, count, note))
        return self.current

    def add(self, rule: Mapping[str, Any] | NSERule, note: str = "") -> RuleSetVersion:
        return self.replace_rules(self.current.rules + (rule,), note=note)

    def change(self, index: int, note: str = "", **fields: Any) -> RuleSetVersion:
        rules = list(self.current.rules)
        self._check_index(index, len(rules))
        rules[index] = {**rules[index].__dict__, **fields}
        return self.replace_rules(rules, note=note)

    def remove(self, index: int, note: str = "") -> RuleSetVersion:
        rules = list(self.current.rules)
        self._check_index(index, len(rules))
        del rules[index]
        return self.replace_rules(rules, note=note)

    def world_at(self, version: int | None = None) -> World:
        v = self.get(version)
        return self.world.with_rules(v.rules, v.min_count)

    def penalty(self, version: int | None = None) -> NSEPenalty:
        v = self.get(version)
        return NSEPenalty(v.rules, self.world.zone_names, self.feature, v.min_count)

    @staticmethod
    def _check_index(index: int, n: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise RuleError(f"no rule {index!r}; the rule set has {n} rules (0..{n - 1})", "index")


@dataclass(frozen=True)
class DesiredOutcome:
    """Proxy robots should not be in `zone` (None: any zone) with dynamic value `value`;
    `weight` is the local penalty per step they would spend there."""

    robots: tuple[str, ...]
    value: str
    zone: str | None = None
    weight: float = 1.0

    def validated(self, world: World, feature: Feature, robot_ids: Sequence[str]) -> "DesiredOutcome":
        unknown = [r for r in self.robots if r not in robot_ids]
        if not self.robots or unknown:
            raise RuleError(f"unknown robots {unknown}" if unknown else "name at least one proxy robot", "robots")
        if self.zone is not None and self.zone not in world.zone_names:
            raise RuleError(f"unknown zone {self.zone!r}; zones: {', '.join(world.zone_names)}", "zone")
        if self.value not in feature.values[1:]:
            raise RuleError(f"unknown value {self.value!r} of {feature.name!r}", "value")
        if not np.isfinite(self.weight) or self.weight <= 0:
            raise RuleError(f"must be positive, got {self.weight}", "weight")
        return replace(self, robots=tuple(self.robots))

    def local_penalty(self, zone: np.ndarray, value: np.ndarray, world: World, feature: Feature) -> np.ndarray:
        """(S,) the outcome's penalty at each of a robot's states, from their zone and value columns."""
        in_zone = zone > 0 if self.zone is None else zone == world.zone_index(self.zone)
        return self.weight * (in_zone & (value == feature.index(self.value)))
