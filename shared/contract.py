"""The wire format of the reward service, version 1 (see docs and ../shared/docs/http-contract.md).

Both sides import these models: the service validates requests with them and the client builds
requests and checks answers with them, so the two cannot drift apart. No server code lives here.

Unknown fields are refused (``extra="forbid"``): a misspelt ``"reward"`` must be a clear 422, not a
request silently scored with the server's default reward set.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

API_PREFIX = "/v1"

# The reference implementation's reward names, accepted as aliases (http-contract.md, POST /v1/score).
# Answers always use the canonical names.
REWARD_ALIASES: dict[str, str] = {"odLength": "od_length", "od_ap": "ap", "od_ap50": "ap50", "length": "cosine"}

# A caller id may be a string or an integer; it is echoed back untouched.
CallerId = StrictStr | StrictInt
# JSON numbers only: `true` is not a weight, and NaN/Infinity never reach the arithmetic.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardRef(_Strict):
    """A reward asked for by name, optionally pinned to one version (``{"name": "ap", "version": "1"}``)."""

    name: StrictStr
    version: StrictStr | None = None


class Sample(_Strict):
    """One completion to score against its ground truth.

    ``solution`` is the ground-truth text of the training data, or a structured list of
    ``{"bbox_2d": [x1, y1, x2, y2], "label": str}``. Its content is checked by the reward engine,
    per sample: an unreadable ground truth makes that sample's rewards ``null`` with a message,
    it does not refuse the whole batch.
    """

    completion: StrictStr
    solution: StrictStr | list[Any]
    completion_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    id: CallerId | None = None


class ScoreRequest(_Strict):
    samples: list[Sample]
    # At least one: an empty list would be scored as nothing and total 0 for every sample.
    rewards: Annotated[list[StrictStr | RewardRef], Field(min_length=1)] | None = None
    weights: dict[str, FiniteFloat] | None = None
    params: dict[str, dict[str, FiniteFloat]] | None = None
    explain: StrictBool = False


class ScoreResponse(BaseModel):
    """Every list is aligned with the request's samples; ``None`` means "not scored", never 0."""

    rewards: dict[str, list[FiniteFloat | None]]
    total: list[FiniteFloat | None]
    versions: dict[str, str]
    errors: list[str | None]
    ids: list[CallerId | None]
    details: list[dict[str, Any]] | None = None

    def check_aligned(self, n_samples: int) -> None:
        """Raise ValueError unless every list holds exactly one entry per sample."""
        lengths = {"total": len(self.total), "errors": len(self.errors), "ids": len(self.ids)}
        lengths.update({f"rewards.{name}": len(values) for name, values in self.rewards.items()})
        if self.details is not None:
            lengths["details"] = len(self.details)
        wrong = {field: n for field, n in lengths.items() if n != n_samples}
        if wrong:
            raise ValueError(f"response lists are not aligned with the {n_samples} samples sent: {wrong}")


# Trailing end-of-text tokens a trainer may leave on a completion (Qwen, Llama 2/3, Phi): the
# service trims them from an OpenRLHF query, the slime adapter from a response.
END_TOKENS = ("<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|end|>")


def trim_end_tokens(text: str) -> str:
    """Drop trailing end-of-text tokens (and the white space between them). White space the model
    wrote before the first of them stays: it is part of what the format reward judges. Linear:
    an index walks back, nothing is copied per token.

    >>> trim_end_tokens("<answer>None</answer> <|im_end|>\\n<|endoftext|>")
    '<answer>None</answer> '
    """
    end = len(text)
    while True:
        stripped = end
        while stripped and text[stripped - 1].isspace():
            stripped -= 1
        token = next((t for t in END_TOKENS if text.endswith(t, 0, stripped)), None)
        if token is None:
            return text[:end]
        end = stripped - len(token)


class OpenRLHFRequest(_Strict):
    """OpenRLHF's remote reward model request (``--reward.remote_url``; ``--remote_rm_url`` before 0.10)."""

    query: list[StrictStr]
    prompts: list[StrictStr]
    labels: list[StrictStr | list[Any]]

    @model_validator(mode="after")
    def _same_lengths(self) -> OpenRLHFRequest:
        if not (len(self.query) == len(self.prompts) == len(self.labels)):
            raise ValueError(
                f"query, prompts and labels must have the same length, got "
                f"{len(self.query)}, {len(self.prompts)} and {len(self.labels)}"
            )
        return self


class OpenRLHFResponse(BaseModel):
    """OpenRLHF cannot carry a ``null`` reward: a batch with an unscorable sample is a 422 instead.
    ``rewards``: the weighted total (what OpenRLHF trains on); ``scores``: the total divided by the sum
    of the weights' magnitudes, in [0, 1] for the default reward set (what OpenRLHF's dynamic
    filtering compares with ``--algo.dynamic_filtering_range``, default 0 1)."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer: ``detail`` names the field and the problem."""

    detail: str | list[dict[str, Any]]


# ---------------------------------------------------------------- evaluation (POST /v1/evaluate)
# Dataset-level metrics of a whole evaluation set in one request: AP over a dataset cannot be
# merged from parts, so the client never splits it (README, "Evaluation").


class EvaluateImage(_Strict):
    """One image of an evaluation set: the model's completion and the image's ground truth
    (the same two forms as ``Sample.solution``; ``None`` / ``[]`` for an image with no box)."""

    completion: StrictStr
    solution: StrictStr | list[Any]


class EvaluateRequest(_Strict):
    """``categories``: every label the set asks for, absent ones included (e.g. COCO's 80). Default:
    the ground-truth labels. Predictions whose label is not a category count against precision
    but take no part in the APs."""

    images: list[EvaluateImage]
    categories: list[StrictStr] | None = None


class CategoryMetrics(BaseModel):
    category: str
    n_gt: int
    n_pred: int
    matches: int
    ap: float | None
    ap50: float | None
    nms_ap: float | None
    nms_ap50: float | None
    precision: float | None
    recall: float | None


class EvaluateResponse(BaseModel):
    """Fractions in [0, 1]; ``None`` where a value is undefined (no ground truth, no prediction)."""

    n_images: int
    n_answered: int
    n_gt: int
    n_pred: int
    matches: int
    n_invalid_box: int
    n_unknown_label: int
    n_no_label: int
    ap: float | None
    ap50: float | None
    precision: float | None
    recall: float | None
    nms_ap: float | None
    nms_ap50: float | None
    per_category: list[CategoryMetrics]
    unknown_labels: dict[str, int]
