"""What /predict, /health and /model take and answer, as pydantic models.

They are the API's contract (FastAPI publishes them in /openapi.json) and are checked on
the way in (a request) and on the way out (every answer is validated before it is sent).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnist_pipeline.core.digits import N_CLASSES, PIXELS

Pixel = Annotated[int, Field(ge=0, le=255)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class PixelsRequest(BaseModel):
    """JSON body of /predict: one MNIST-style digit, as the CSV rows hold it."""

    # strict: 3.0, "3" and true are not pixel values; forbid: a typo'd key is an error.
    model_config = ConfigDict(extra="forbid", strict=True)

    pixels: list[Pixel] = Field(
        min_length=PIXELS,
        max_length=PIXELS,
        description="784 integers 0-255, row by row: a 28x28 light digit on black, "
        "already MNIST-style (not preprocessed again)",
    )


class Prediction(BaseModel):
    predicted: int = Field(ge=0, le=N_CLASSES - 1, description="the most probable digit")
    confidence: Probability = Field(description="the probability of `predicted`")
    probabilities: list[Probability] = Field(
        min_length=N_CLASSES, max_length=N_CLASSES, description="of the digits 0..9, in order"
    )
    pixels: list[Pixel] = Field(
        min_length=PIXELS,
        max_length=PIXELS,
        description="the 28x28 digit the model saw, row by row (for an image: after "
        "MNIST-style preprocessing)",
    )


class Health(BaseModel):
    status: Literal["ok", "failing"] = Field(
        default="ok", description="ok: a probe prediction succeeded when the server started"
    )
    arch: str = Field(description="the served network's architecture")
    detail: str | None = Field(default=None, description="why it is failing, in one line")


class ModelInfo(BaseModel):
    file: str = Field(description="the name of the model file being served (not its path)")
    arch: str
    hidden: list[int] = Field(description="widths of the hidden Linear layers")
    dropout: float = Field(description="dropout while training (off when predicting)")
    channels: list[int] = Field(description="cnn only: channels of each conv block")
    parameters: int = Field(description="number of trainable weights")
    trained_with: dict[str, object] | None = Field(
        description="params of the run that wrote this file, from dvc.lock; null when "
        "dvc.lock does not record this exact file"
    )
    test_accuracy: float | None = Field(description="accuracy in metrics/metrics.json, if there")
    metrics_match_model: bool = Field(
        description="dvc.lock says those metrics were computed from this exact model file"
    )


class ErrorMessage(BaseModel):
    detail: str = Field(description="one line saying what was wrong and what was expected")
