"""Choosing actions with the latest good model, and the per-fit model cache."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np
from sqlalchemy.orm import Session

from app.db.models import Fit, Study
from app.problems import FieldError, ValidationProblem
from app.schemas.common import MAX_ABS_FEATURE
from app.schemas.policy import PolicyDecision, PolicyOut, PolicyRequest
from app.services.fits import Model, decode_model, latest_good_fit_id
from app.services.quotas import source_tasks
from solvers.errors import InvalidInputError
from solvers.policy import PolicyResult, choose_actions

logger = logging.getLogger(__name__)


class ModelCache:
    """Decoded models of succeeded fits, keyed by fit id, least recently used out.

    A succeeded fit never changes, so an entry never goes stale. The size
    limit only bounds memory, because each entry contains a d x d curvature
    matrix.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Model] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, study: Study, fit_id: str) -> Model:
        """Return the model of ``fit_id``, decoding it from the database on a miss."""
        with self._lock:
            model = self._entries.get(fit_id)
            if model is not None:
                self._entries.move_to_end(fit_id)
                return model
        fit = session.get(Fit, fit_id)
        model = decode_model(fit, study.dimension, len(source_tasks(study)))
        with self._lock:
            self._entries[fit_id] = model
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return model

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


MODEL_CACHE = ModelCache()


def load_latest_model(session: Session, study: Study) -> Model:
    """Return the latest good model of the study (404 problem when there is none)."""
    return MODEL_CACHE.get(session, study, latest_good_fit_id(session, study.id))


def check_contexts(request: PolicyRequest, dimension: int) -> list[np.ndarray]:
    """Turn the contexts into arrays of shape (A_s, d); raise 422 listing every bad one.

    ``index`` in each error is the context's position in the request.
    """
    errors: list[FieldError] = []
    if not request.contexts:
        errors.append(FieldError(None, "contexts", "at least one context is required"))
    arrays: list[np.ndarray] = []
    for index, context in enumerate(request.contexts):
        if not context.actions:
            errors.append(
                FieldError(index, "actions", "at least one action is required")
            )
            continue
        bad_lengths = [
            (position, len(action))
            for position, action in enumerate(context.actions)
            if len(action) != dimension
        ]
        for position, length in bad_lengths:
            errors.append(
                FieldError(
                    index,
                    f"actions.{position}",
                    f"expected {dimension} values, got {length}",
                )
            )
        if bad_lengths:
            continue
        features = np.asarray(context.actions, dtype=np.float64)
        finite = np.isfinite(features).all(axis=1)
        for position in np.flatnonzero(~finite):
            errors.append(
                FieldError(index, f"actions.{position}", "contains NaN or infinity")
            )
        too_large = finite & (np.abs(features) > MAX_ABS_FEATURE).any(axis=1)
        for position in np.flatnonzero(too_large):
            errors.append(
                FieldError(
                    index,
                    f"actions.{position}",
                    f"contains a value of absolute value above the maximum of "
                    f"{MAX_ABS_FEATURE:g}",
                )
            )
        reference = context.reference
        if isinstance(reference, int) and not 0 <= reference < len(context.actions):
            errors.append(
                FieldError(
                    index,
                    "reference",
                    f"index {reference} is out of range for "
                    f"{len(context.actions)} actions",
                )
            )
        arrays.append(features)
    if errors:
        raise ValidationProblem(
            f"{len(errors)} invalid value(s) in the policy request", errors
        )
    return arrays


def _check_finite_result(result: PolicyResult) -> None:
    """Raise 422 when the solve produced a non-finite number.

    With bounded features and radius this does not happen for models fitted
    by the service. It stops a NaN or infinity from reaching the response,
    where JSON would turn it into null in a required number field.
    """
    arrays = {
        "estimate": result.estimates,
        "lower_bound": result.lower_bounds,
    }
    bad = [
        FieldError(int(index), name, "the computed value is not a finite number")
        for name, values in arrays.items()
        for index in np.flatnonzero(~np.isfinite(np.asarray(values, dtype=float)))
    ]
    scalars = {
        "value": result.value,
        "stochastic_value": result.stochastic_value,
        "gap": result.gap,
    }
    bad += [
        FieldError(None, name, "the computed value is not a finite number")
        for name, value in scalars.items()
        if not np.isfinite(value)
    ]
    if bad:
        logger.warning("policy.non_finite_result fields=%d", len(bad))
        raise ValidationProblem(
            "the features or the radius are too large for a finite decision; "
            "rescale the features",
            bad,
        )


def decide(session: Session, study: Study, request: PolicyRequest) -> PolicyOut:
    """Choose one action per context with the study's latest good model."""
    contexts = check_contexts(request, study.dimension)
    model = load_latest_model(session, study)
    radius = (
        model.confidence_radius
        if request.confidence_radius is None
        else float(request.confidence_radius)
    )
    try:
        result = choose_actions(
            contexts,
            model.theta,
            model.curvature,
            radius,
            mode=request.mode,
            references=[context.reference for context in request.contexts],
        )
    except InvalidInputError as error:
        raise ValidationProblem(
            "the policy request is invalid", [FieldError(None, "contexts", str(error))]
        ) from error

    _check_finite_result(result)
    decisions = [
        PolicyDecision(
            id=context.id,
            action=int(action),
            estimate=float(estimate),
            lower_bound=float(lower_bound),
        )
        for context, action, estimate, lower_bound in zip(
            request.contexts,
            result.actions,
            result.estimates,
            result.lower_bounds,
            strict=True,
        )
    ]
    logger.info(
        "policy.decided study_id=%s fit_id=%s mode=%s contexts=%d converged=%s",
        study.id,
        model.fit_id,
        request.mode,
        len(contexts),
        result.converged,
    )
    return PolicyOut(
        fit_id=model.fit_id,
        mode=request.mode,
        confidence_radius=radius,
        decisions=decisions,
        value=float(result.value),
        stochastic_value=float(result.stochastic_value),
        # Only the pessimistic mode solves a max-min problem, so the solver's gap
        # in the other modes is no duality gap and the response reports 0.
        gap=float(result.gap) if request.mode == "pessimistic" else 0.0,
        converged=bool(result.converged),
    )
