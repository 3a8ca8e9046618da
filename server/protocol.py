"""Request schemas of the OpenAI-compatible API (pydantic, strict) and their translation into
SamplingParams. Unknown fields are rejected, not ignored: a client that sends a parameter this
server does not implement learns so from a 400 that names it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from hearth import SamplingParams

_STRICT = ConfigDict(extra="forbid", strict=True)


def _integral(value: Any) -> Any:
    """JSON Schema counts 1.0 as an integer: accept it as 1 (strict mode would not)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(**bounds: int) -> Any:
    """An integer field type with bounds that the OpenAPI document shows (minimum/maximum)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


Int = integer()
TokenId = integer(ge=0)
NonEmptyStr = Annotated[str, Field(min_length=1)]
TOKEN_ID_KEY = r"^(0|[1-9][0-9]*)$"  # a token id written as a JSON object key


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Fields both generation routes share (OpenAI's, plus vLLM's common extensions)."""

    model_config = _STRICT

    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: integer(ge=-1) | None = None
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    seed: Int | None = None
    stop: NonEmptyStr | list[NonEmptyStr] | None = None
    stop_token_ids: list[TokenId] | None = None
    n: integer(ge=1, le=128) = 1  # OpenAI's cap; the admission limit may allow fewer
    # keys are token ids written as strings (the schema's key pattern is narrowed to the vocabulary)
    logit_bias: dict[Annotated[str, Field(pattern=TOKEN_ID_KEY)], Annotated[float, Field(ge=-100, le=100)]] | None = None
    ignore_eos: bool = False
    # beyond max_tokens it cannot matter (generation stops there anyway): capped, not refused
    min_tokens: integer(ge=0) = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None   # only read by streams; ignored otherwise

    def sampling_params(self, defaults: SamplingParams, max_tokens: int | None, logprobs: int | None,
                        prompt_logprobs: int | None = None) -> SamplingParams:
        """The engine's parameters: the model's defaults, overridden by what the request set."""
        fields = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                  "min_p": self.min_p, "presence_penalty": self.presence_penalty,
                  "frequency_penalty": self.frequency_penalty, "repetition_penalty": self.repetition_penalty}
        changes: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        bias = None
        if self.logit_bias:
            try:
                bias = {int(k): float(v) for k, v in self.logit_bias.items()}
            except ValueError:
                raise ValueError("logit_bias keys must be token ids (integers as strings)") from None
        min_tokens = self.min_tokens if max_tokens is None else min(self.min_tokens, max_tokens)
        changes.update(
            max_tokens=max_tokens, n=self.n, seed=self.seed, stop=self.stop, stop_token_ids=self.stop_token_ids,
            ignore_eos=self.ignore_eos, min_tokens=min_tokens, logit_bias=bias, logprobs=logprobs,
            prompt_logprobs=prompt_logprobs, include_stop_str_in_output=self.include_stop_str_in_output,
            skip_special_tokens=self.skip_special_tokens)
        return defaults.clone(**changes)


class CompletionRequest(_SamplingFields):
    """POST /v1/completions."""

    prompt: (NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)]
             | Annotated[list[TokenId], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)])
    max_tokens: integer(ge=1) | None = 16
    logprobs: integer(ge=0, le=20) | None = None
    echo: bool = False


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        out = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        if self.name is not None:
            out["name"] = self.name
        return out


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: integer(ge=1) | None = None
    max_completion_tokens: integer(ge=1) | None = None
    logprobs: bool = False
    # without logprobs it is ignored: no log-probs are returned, so it cannot change the answer
    top_logprobs: integer(ge=0, le=20) | None = None
    add_generation_prompt: bool = True

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenizePrompt(BaseModel):
    """POST /tokenize with a prompt."""

    model_config = _STRICT
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True


class TokenizeChat(BaseModel):
    """POST /tokenize with chat messages, rendered with the chat template."""

    model_config = _STRICT
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True


TokenizeRequest = TokenizePrompt | TokenizeChat


class DetokenizeRequest(BaseModel):
    """POST /detokenize."""

    model_config = _STRICT
    model: str | None = None
    tokens: list[TokenId]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why} for status, why in (
        (400, "invalid request (bad JSON, wrong type, out of range, unknown parameter, context length)"),
        (401, "missing or invalid API key"), (404, "unknown model"), (408, "the request body did not arrive in time"),
        (413, "request body too large"), (429, "the server is at capacity (retry after Retry-After seconds)"),
        (500, "the engine failed this request (the cause is in the message)"),
        (503, "loading, shutting down or engine stopped"))}

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the whole response (JSON), or with `stream: true` server-sent events: one "
                         "`data: {chunk}` per delta, then `data: [DONE]`",
          # before OpenAPI 3.2, an event stream's schema describes one event
          "content": {"text/event-stream": {"schema": {
              "type": "object", "required": ["data"],
              "properties": {"data": {"type": "string",
                                      "description": "a JSON chunk (or error) object, or the final [DONE]"},
                             "event": {"type": "string"}}}}}},
    **ERROR_RESPONSES}
"""The generation routes' responses: JSON, or an event stream when the request asks for one."""
