"""What a served model answers, per task: its scores, the predictions made of them, and the response models.

One definition for everyone who turns a fitted pipeline's output into an answer: the service
(bentos/service.py), test-serving's and the rollout's canary check (tasks/serving/client.py, which
compares the served answers with these computed in process) and simulated traffic (tasks/traffic.py).

* :func:`model_scores` -- the pipeline's raw output for a frame: ``binary`` the positive class's
  probability (n,), ``multiclass`` every class's probability in the served class order (n, k; a class the
  model never saw in training gets 0), ``regression`` the predicted value (n,). The service passes its
  compiled pipeline and the request's columns instead (``bentos/fastpath.py: serving_model``): anything with
  the pipeline's ``predict_proba``, ``predict`` and ``classes_`` is scored the same way.
* :func:`prediction_columns` -- the scores as the inference log records them
  (``tasks.inference_log.PREDICTION_COLUMNS``): binary ``probability`` and the 0/1 ``label`` at the
  threshold; multiclass the ``label`` (the most probable class, the first in class order on a tie), its
  ``probability`` and all ``probabilities``; regression the ``prediction``.
* :func:`response_models` -- the typed answers of ``/predict`` and ``/predict_batch`` for a task (the
  OpenAPI document shows them): binary as it always was (``probability``, ``label``, ``threshold``);
  multiclass ``label`` (the class as declared: its canonical text) and ``probabilities`` ({class: p}, in
  class order) per record, ``labels`` and ``probabilities`` ({class: [p, ...]}) for a batch; regression
  ``prediction`` per record and ``predictions`` for a batch.

Pure: numpy and pydantic only (the bento ships it; no Prefect, no BentoML, no scikit-learn import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, WithJsonSchema, create_model

# --------------------------------------------------------------------------------------------------
# scores and predictions
# --------------------------------------------------------------------------------------------------


def model_scores(pipeline, frame, task: str, classes: list[str] | None = None) -> np.ndarray:
    """The fitted pipeline's output for ``frame`` (already the model's input), per task (module docstring).

    ``pipeline`` and ``frame`` may be any model and the input it reads: the service's ``CompiledPipeline``
    reads a dict of feature arrays (bentos/fastpath.py)."""
    if task == "binary":
        return pipeline.predict_proba(frame)[:, 1]
    if task == "multiclass":
        return class_probabilities(pipeline.classes_, pipeline.predict_proba(frame), classes or [])
    return np.asarray(pipeline.predict(frame), dtype=np.float64)


def class_probabilities(fitted_classes, probabilities, classes: list[str]) -> np.ndarray:
    """``predict_proba`` columns (in the estimator's ``classes_`` order) put in ``classes`` order.

    The model was fitted on the canonical class texts; a declared class it never saw gets probability 0, a
    fitted class the declaration does not have is an error naming it.
    """
    fitted = [str(c) for c in fitted_classes]
    if fitted == classes:
        return np.asarray(probabilities, dtype=np.float64)
    unknown = sorted(set(fitted) - set(classes))
    if unknown:
        raise ValueError(f"the model predicts class(es) {unknown} that the dataset does not declare "
                         f"(classes: {classes})")
    out = np.zeros((len(probabilities), len(classes)))
    position = {c: i for i, c in enumerate(classes)}
    out[:, [position[c] for c in fitted]] = probabilities
    return out


def prediction_columns(scores: np.ndarray, task: str, *, threshold: float | None = None,
                       classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """The predictions made of :func:`model_scores`, by inference-log column (module docstring)."""
    if task == "binary":
        return {"probability": scores, "label": (scores >= threshold).astype(np.int64)}
    if task == "multiclass":
        best = scores.argmax(axis=1)
        return {"label": np.asarray(classes, dtype=object)[best],
                "probability": scores[np.arange(len(scores)), best], "probabilities": scores}
    return {"prediction": scores}


# --------------------------------------------------------------------------------------------------
# the answers: binary (as it always was)
# --------------------------------------------------------------------------------------------------


class Prediction(BaseModel):
    probability: float = Field(description="probability of the positive label")
    label: int = Field(description="1 if probability >= threshold, else 0")


class PredictResponse(BaseModel):
    request_id: str
    model: str
    model_version: int
    threshold: float
    predictions: list[Prediction]


class BatchPredictResponse(BaseModel):
    request_id: str
    model: str
    model_version: int
    threshold: float
    rows: int
    probabilities: list[float]
    labels: list[int]


# --------------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------------


class ValuePrediction(BaseModel):
    prediction: float = Field(description="the predicted value of the target")


class ValuePredictResponse(BaseModel):
    request_id: str
    model: str
    model_version: int
    predictions: list[ValuePrediction]


class ValueBatchPredictResponse(BaseModel):
    request_id: str
    model: str
    model_version: int
    rows: int
    predictions: list[float]


# --------------------------------------------------------------------------------------------------
# multiclass: generated from the declared classes
# --------------------------------------------------------------------------------------------------


def _per_class(classes: list[str], value_schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of ``{class: value}`` holding exactly the declared classes."""
    return {"type": "object", "properties": {c: value_schema for c in classes}, "required": list(classes),
            "additionalProperties": False}


def multiclass_models(classes: list[str]) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """(one record's prediction, the /predict answer, the /predict_batch answer) for ``classes``."""
    label = Literal[tuple(classes)]
    probabilities = Annotated[dict[str, float], WithJsonSchema(_per_class(classes, {"type": "number"}))]
    columns = Annotated[dict[str, list[float]],
                        WithJsonSchema(_per_class(classes, {"type": "array", "items": {"type": "number"}}))]
    record = create_model(
        "ClassPrediction",
        label=(label, Field(description="the most probable class (the first in class order on a tie)")),
        probabilities=(probabilities, Field(description="each class's probability, in class order")))
    response = create_model("ClassPredictResponse", request_id=(str, ...), model=(str, ...),
                            model_version=(int, ...), predictions=(list[record], ...))
    batch = create_model("ClassBatchPredictResponse", request_id=(str, ...), model=(str, ...),
                         model_version=(int, ...), rows=(int, ...),
                         labels=(list[label], Field(description="the most probable class of each row")),
                         probabilities=(columns, Field(description="each class's probabilities, one per row")))
    return record, response, batch


# --------------------------------------------------------------------------------------------------
# one task's answers, built from prediction_columns
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseSchema:
    """The answer models of one served model and how its predictions become them."""

    task: str
    classes: list[str] | None
    record: type[BaseModel]
    response: type[BaseModel]
    batch: type[BaseModel]

    def predict_response(self, request_id: str, model: str, version: int, threshold: float | None,
                         predictions: dict[str, np.ndarray]) -> BaseModel:
        """The /predict answer: one prediction per record, in order."""
        head = {"request_id": request_id, "model": model, "model_version": version}
        if self.task == "binary":
            rows = [Prediction(probability=p, label=y) for p, y in
                    zip(predictions["probability"].tolist(), predictions["label"].tolist(), strict=True)]
            return PredictResponse(**head, threshold=threshold, predictions=rows)
        if self.task == "multiclass":
            classes = self.classes or []
            rows = [self.record(label=label, probabilities=dict(zip(classes, p, strict=True))) for label, p in
                    zip(predictions["label"].tolist(), predictions["probabilities"].tolist(), strict=True)]
            return self.response(**head, predictions=rows)
        return ValuePredictResponse(**head, predictions=[ValuePrediction(prediction=v)
                                                         for v in predictions["prediction"].tolist()])

    def batch_response(self, request_id: str, model: str, version: int, threshold: float | None,
                       predictions: dict[str, np.ndarray]) -> BaseModel:
        """The /predict_batch answer: column-oriented, like the request."""
        first = next(iter(predictions.values()))
        head = {"request_id": request_id, "model": model, "model_version": version, "rows": len(first)}
        if self.task == "binary":
            return BatchPredictResponse(**head, threshold=threshold, probabilities=predictions["probability"].tolist(),
                                        labels=predictions["label"].tolist())
        if self.task == "multiclass":
            scores = predictions["probabilities"]
            return self.batch(**head, labels=predictions["label"].tolist(),
                              probabilities={c: scores[:, i].tolist() for i, c in enumerate(self.classes or [])})
        return ValueBatchPredictResponse(**head, predictions=predictions["prediction"].tolist())


def response_models(task: str, classes: list[str] | None = None) -> ResponseSchema:
    """The answer models of a served model of ``task`` (``classes``: the served class order)."""
    if task == "binary":
        return ResponseSchema(task, classes, Prediction, PredictResponse, BatchPredictResponse)
    if task == "multiclass":
        if not classes:
            raise ValueError("a multiclass model is served with its classes; none were given")
        return ResponseSchema(task, list(classes), *multiclass_models(list(classes)))
    return ResponseSchema(task, None, ValuePrediction, ValuePredictResponse, ValueBatchPredictResponse)
