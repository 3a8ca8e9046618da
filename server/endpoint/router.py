"""The router: which deployment answers a request, and which (if any) gets a mirrored copy.

One module for both runtimes (local worker processes and Ray Serve): it only decides, from the
endpoint's spec, the live traffic table, the mirror table and which deployments are healthy; it
never talks to a deployment. Per request:

1. the request's `model` picks the group (deployments sharing a served_model_name); unknown ->
   RoutingError 404 listing the names;
2. a `hearth-deployment` pin picks that deployment (unknown or of another group -> 404; pinned
   requests are never mirrored);
3. otherwise the group's weights pick one, at random per request, among its healthy deployments
   (a down deployment's share goes to the healthy rest, in proportion; when every deployment with
   a share is down, any healthy one of the group fills in; none healthy, or a group whose weights
   are all 0 -> 503);
4. each deployment with a mirror share gets a copy of that share of the group's live requests."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hearth.server.endpoint.spec import EndpointSpec, check_mirror, check_traffic


class RoutingError(Exception):
    """No deployment can take the request: `status` (404 or 503) and a message for the client."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass(frozen=True)
class Route:
    """Where one request goes: the live deployment, and the mirrors that get a copy."""

    deployment: str
    mirrors: tuple[str, ...] = ()
    pinned: bool = False


@dataclass
class Router:
    """Routing state: the spec's deployments and groups, the traffic and mirror tables (replaced
    whole by `set_traffic` / `set_mirror`, validated first), and the healthy set."""

    spec: EndpointSpec
    rng: random.Random = field(default_factory=random.Random)
    healthy: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.traffic = dict(self.spec.traffic)
        self.mirror = {k: v for k, v in self.spec.mirror_traffic.items() if v}
        self._groups = self.spec.groups()
        self._group_of = {d: g for g, names in self._groups.items() for d in names}

    @property
    def served_names(self) -> list[str]:
        """The names clients may send as `model`."""
        return list(self._groups)

    def set_traffic(self, traffic: dict[str, int]) -> dict[str, int]:
        """Replace the live split (ValueError if it breaks a rule, the mirrors' included)."""
        full = check_traffic(self.spec, traffic)
        check_mirror(self.spec, full, self.mirror)
        self.traffic = full
        return full

    def set_mirror(self, mirror: dict[str, int]) -> dict[str, int]:
        """Replace the mirror table (ValueError if it breaks a rule)."""
        check_mirror(self.spec, self.traffic, mirror)
        self.mirror = {k: v for k, v in mirror.items() if v}
        return dict(self.mirror)

    def route(self, model: str | None, pin: str | None = None) -> Route:
        """Pick the deployment for one request (see the module docstring)."""
        group = self._group(model)
        names = self._groups[group]
        if pin is not None:
            if pin not in self._group_of:
                raise RoutingError(404, f"deployment {pin[:100]!r} does not exist; deployments of {group!r}: "
                                        f"{', '.join(names)}", param="hearth-deployment")
            if self._group_of[pin] != group:
                raise RoutingError(404, f"deployment {pin!r} serves {self._group_of[pin]!r}, not {group!r}",
                                   param="hearth-deployment")
            if pin not in self.healthy:
                raise RoutingError(503, f"deployment {pin!r} is not ready")
            return Route(pin, pinned=True)
        live = self._pick(group, names)
        mirrors = tuple(m for m in names if m in self.mirror and m != live and m in self.healthy
                        and self.rng.random() * 100 < self.mirror[m])
        return Route(live, mirrors)

    def _group(self, model: str | None) -> str:
        if model is None:
            if len(self._groups) == 1:
                return next(iter(self._groups))
            raise RoutingError(404, f"say which model: this endpoint serves {', '.join(map(repr, self._groups))}",
                               param="model")
        if model not in self._groups:
            raise RoutingError(404, f"model {model[:100]!r} does not exist; this endpoint serves "
                                    f"{', '.join(map(repr, self._groups))}", param="model")
        return model

    def _pick(self, group: str, names: list[str]) -> str:
        if not any(self.traffic.get(n, 0) for n in names):
            raise RoutingError(503, f"group {group!r} has no traffic assigned (every weight is 0)")
        up = [n for n in names if n in self.healthy]
        weighted = [(n, self.traffic.get(n, 0)) for n in up if self.traffic.get(n, 0) > 0]
        if not weighted:  # every deployment with a share is down: any healthy one of the group fills in
            if not up:
                raise RoutingError(503, f"no deployment of {group!r} is ready to take traffic")
            weighted = [(n, 1) for n in up]
        total = sum(w for _, w in weighted)
        x = self.rng.random() * total
        for name, weight in weighted:
            x -= weight
            if x < 0:
                return name
        return weighted[-1][0]
