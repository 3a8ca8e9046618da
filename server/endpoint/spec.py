"""The endpoint file: an endpoint's keys, deployments, traffic split and mirrored traffic.

    name: code-assist
    keys: [env:HEARTH_API_KEY]
    admin_keys: [env:HEARTH_ADMIN_KEY]
    state_dir: ./hearth-state
    deployments:
      blue:  {model: path/to/model, served_model_name: pystdlib, quantization: q8_0}
      green: {model: model-q4_0.gguf, served_model_name: pystdlib}
    traffic: {blue: 90, green: 10}
    mirror_traffic: {green: 20}

Deployments that share a `served_model_name` form a group; a group's traffic weights are
integers that sum to 100 (or are all 0). Mirroring copies up to 50% of a group's live traffic to
a deployment of that group that takes none of it. Everything is checked here, before anything
loads: `load_spec` raises SpecError naming the field and its line in the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_MIRROR_PERCENT = 50
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # a deployment name: it goes into headers and URLs

DeploymentName = Annotated[str, Field(pattern=_NAME)]
Percent = Annotated[int, Field(ge=0, le=100)]


DEFAULT_MODEL_NAME = "hearth-pystdlib"  # the bundled model's served name


def served_model_name(model: str | None, given: str | None) -> str:
    """The model id clients send: `given` (--served-model-name), else a .gguf file's stem, else
    MODEL as given, else the bundled model's name. One rule for `hearth serve` and endpoints."""
    if given:
        return given
    if model is None:
        return DEFAULT_MODEL_NAME
    return Path(model).stem if model.lower().endswith(".gguf") else model


class SpecError(ValueError):
    """A bad endpoint file or change: says which field, and where in the file."""


class DeploymentSpec(BaseModel):
    """One deployment: a model and the engine options `hearth serve` takes for it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None                  # HF directory or .gguf; None: the bundled model
    served_model_name: str | None = None      # the `model` clients send; default: as `hearth serve`
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: str | None = None
    quantization: Literal["q8_0", "q4_0"] | None = None
    max_model_len: int | None = Field(None, ge=1)
    kv_cache_memory: int | None = Field(None, ge=1)
    num_kv_blocks: int | None = Field(None, ge=1)
    block_size: int = Field(16, ge=1)
    max_num_seqs: int = Field(64, ge=1)
    max_num_batched_tokens: int = Field(2048, ge=1)
    enable_prefix_caching: bool = True
    seed: int | None = None
    stream_interval: int = Field(1, ge=1)

    def engine_kwargs(self) -> dict[str, Any]:
        """AsyncLLM keyword arguments (everything but the model and its served name)."""
        return self.model_dump(exclude={"model", "served_model_name"})


class EndpointSpec(BaseModel):
    """A whole endpoint; `groups()` and the traffic rules are checked on construction."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field("hearth", pattern=_NAME)
    keys: list[str] = []
    admin_keys: list[str] = []
    state_dir: str = "./hearth-state"
    deployments: dict[DeploymentName, DeploymentSpec] = Field(min_length=1)
    traffic: dict[str, Percent] = {}
    mirror_traffic: dict[str, Percent] = {}

    @model_validator(mode="after")
    def _check(self) -> EndpointSpec:
        for field in ("keys", "admin_keys"):
            for i, key in enumerate(getattr(self, field)):
                if not key.strip():
                    raise ValueError(f"{field}[{i}] is empty (leave it out to serve without keys)")
        self.traffic = check_traffic(self, self.traffic)
        check_mirror(self, self.traffic, self.mirror_traffic)
        return self

    def served_name(self, deployment: str) -> str:
        """The name clients send for `deployment` (its group)."""
        d = self.deployments[deployment]
        return served_model_name(d.model, d.served_model_name)

    def groups(self) -> dict[str, list[str]]:
        """served_model_name -> its deployments, in file order."""
        out: dict[str, list[str]] = {}
        for name in self.deployments:
            out.setdefault(self.served_name(name), []).append(name)
        return out


def check_traffic(spec: EndpointSpec, traffic: dict[str, int]) -> dict[str, int]:
    """The full traffic table (every deployment, missing ones at 0), or ValueError: unknown
    deployments, and per group integers that sum to 100 or are all 0. A group of one deployment
    that the table leaves out takes all of its traffic."""
    unknown = sorted(set(traffic) - set(spec.deployments))
    if unknown:
        raise ValueError(f"traffic names unknown deployment(s) {unknown}; deployments: {sorted(spec.deployments)}")
    full = {}
    for group, names in spec.groups().items():
        weights = {n: traffic.get(n, 0) for n in names}
        if len(names) == 1 and names[0] not in traffic:
            weights = {names[0]: 100}
        total = sum(weights.values())
        if total not in (0, 100):
            raise ValueError(f"traffic of group {group!r} ({', '.join(names)}) sums to {total}; it must be 100 "
                             "(or all 0)")
        full.update(weights)
    return full


def check_mirror(spec: EndpointSpec, traffic: dict[str, int], mirror: dict[str, int]) -> None:
    """Mirroring rules: known deployments, at most MAX_MIRROR_PERCENT, only to a deployment
    that takes no live traffic, and in a group that has live traffic to copy."""
    groups = spec.groups()
    for name, percent in mirror.items():
        if name not in spec.deployments:
            raise ValueError(f"mirror_traffic names unknown deployment {name!r}")
        if percent > MAX_MIRROR_PERCENT:
            raise ValueError(f"mirror_traffic[{name!r}] is {percent}%; at most {MAX_MIRROR_PERCENT}% may be mirrored")
        if percent and traffic.get(name, 0):
            raise ValueError(f"mirror_traffic[{name!r}]: {name!r} takes {traffic[name]}% of live traffic; only a "
                             "deployment with 0% live traffic can receive mirrored copies")
        group = spec.served_name(name)
        if percent and not any(traffic.get(n, 0) for n in groups[group]):
            raise ValueError(f"mirror_traffic[{name!r}]: group {group!r} has no live traffic to mirror")


def resolve_keys(keys: list[str], field: str) -> tuple[str, ...]:
    """Literal keys as they are, `env:VAR` from the environment (unset or empty: SpecError)."""
    out = []
    for i, key in enumerate(keys):
        if key.startswith("env:"):
            var = key[4:]
            value = os.environ.get(var, "")
            if not value.strip():
                raise SpecError(f"{field}[{i}]: environment variable {var} is unset or empty")
            out.append(value.strip())
        else:
            out.append(key)
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------- reading the file

def _lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Every path in a YAML document -> its 1-based line (of the key, for mapping entries)."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out.update(_lines(value, sub))
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_lines(item, path + (i,)))
    return out


def _where(loc: tuple, lines: dict[tuple, int]) -> int | None:
    """The line of the deepest known part of a pydantic error location."""
    parts = tuple(p for p in loc if not (isinstance(p, str) and re.search(r"[\[\]-]|^function", p)))
    while parts:
        key = tuple(str(p) if not isinstance(p, int) else p for p in parts)
        if key in lines:
            return lines[key]
        parts = parts[:-1]
    return None


def _named_in(message: str) -> tuple:
    """The field a rule's message starts with: "traffic ...", "mirror_traffic['green']: ...",
    "keys[0] ..." -> ("traffic",), ("mirror_traffic", "green"), ("keys", 0)."""
    m = re.match(r"(\w+)(?:\[(?:'([^']*)'|(\d+))\])?", message)
    if m is None:
        return ()
    key = m.group(2) if m.group(2) is not None else (int(m.group(3)) if m.group(3) is not None else None)
    return (m.group(1),) if key is None else (m.group(1), key)


def parse_spec(text: str, source: str = "endpoint file") -> EndpointSpec:
    """An EndpointSpec from YAML text, or SpecError naming the field and the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{source}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping (name, keys, deployments, traffic, ...)")
    lines = _lines(node) if node is not None else {}
    try:
        return EndpointSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            known = DeploymentSpec if err.get("loc", ())[:1] == ("deployments",) else EndpointSpec
            message = f"unknown field; the fields are {', '.join(known.model_fields)}"
        loc = tuple(err.get("loc", ())) or _named_in(message)  # whole-file rules name their field first
        field = ".".join(str(p) for p in loc if not re.search(r"[\[\]-]", str(p))) or "(top level)"
        line = _where(loc, lines)
        at = f" (line {line})" if line is not None else ""
        if message.startswith(field.split(".")[0]):
            field = ""
        raise SpecError(f"{source}{at}: {field + ': ' if field else ''}{message}") from None


def load_spec(path: str | Path) -> EndpointSpec:
    """Read and check an endpoint file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read endpoint file {str(path)!r}: {exc.strerror}") from None
    return parse_spec(text, source=str(path))
