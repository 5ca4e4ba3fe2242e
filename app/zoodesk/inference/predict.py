"""Prediction of one sample: preprocessing, tiled inference, postprocessing.

A :class:`Predictor` holds one ONNX Runtime session for a model and device and is
reused for every sample of a run (and by the GUI's preview).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field

import numpy as np

from zoodesk.errors import ShapeError
from zoodesk.inference.processing import Processing
from zoodesk.inference.providers import batch_voxel_budget
from zoodesk.inference.session import OnnxSession, map_tensors_to_graph
from zoodesk.inference.tiling import TilePlan, iter_tiled, plan_tiles
from zoodesk.models.package import ModelPackage
from zoodesk.models.spec import ModelSpec, TensorSpec, WeightsSpec


@dataclass
class SampleResult:
    """Outputs of one sample (model axis order) and how they were computed."""

    outputs: dict[str, np.ndarray]
    plan: TilePlan
    seconds: float
    inference_seconds: float


@dataclass
class Predictor:
    """Runs one model on one device; create once per run and reuse.

    Parameters
    ----------
    package:
        The loaded model package.
    device:
        ``auto``, ``cpu`` or ``gpu``.
    threads:
        ONNX Runtime intra-op threads (``None``: the runtime's default).
    weights_format:
        Which weights entry to run (default: the ONNX entry).
    tile:
        Forced block size per spatial axis id (default: whole image when it fits).
    pad_mode:
        How blocks that extend past the image are filled (``reflect``, ``symmetric``,
        ``edge`` or ``constant``).
    verify:
        Check the weights' sha256 before loading them.
    """

    package: ModelPackage
    device: str = "auto"
    threads: int | None = None
    weights_format: str | None = None
    tile: Mapping[str, int] | None = None
    pad_mode: str = "reflect"
    max_block_voxels: int | None = None
    verify: bool = True
    weights: WeightsSpec = field(init=False)
    session: OnnxSession = field(init=False)

    def __post_init__(self) -> None:
        spec = self.package.spec
        self.weights = self.package.executable_weights(self.weights_format)
        path = (
            self.package.verify(self.weights.source)
            if self.verify
            else self.package.path_of(self.weights.source)
        )
        primary = spec.inputs[0]
        fixed = all(a.size is not None for a in primary.axes if a.kind != "batch")
        self.session = OnnxSession(path, self.device, self.threads, fixed_shapes=fixed)
        self._batch_voxels = batch_voxel_budget(self.session.device.provider)
        self._in_index = map_tensors_to_graph(
            [t.id for t in spec.inputs], self.session.inputs, "inputs", path
        )
        self._out_index = map_tensors_to_graph(
            [t.id for t in spec.outputs], self.session.outputs, "outputs", path
        )
        self._pre = {t.id: Processing(t.preprocessing, t) for t in spec.inputs}
        self._post = {t.id: Processing(t.postprocessing, t) for t in spec.outputs}
        self._graph_dtypes = [self.session.inputs[i].dtype for i in self._in_index]
        first_graph_input = self.session.inputs[self._in_index[0]]
        batch_pos = next((i for i, a in enumerate(spec.inputs[0].axes) if a.kind == "batch"), None)
        self._graph_batch = (
            first_graph_input.shape[batch_pos]
            if batch_pos is not None and batch_pos < len(first_graph_input.shape)
            else None
        )

    @property
    def spec(self) -> ModelSpec:
        return self.package.spec

    @property
    def warnings(self) -> list[str]:
        return self.session.warnings

    def _run_batch(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        graph_feeds: list[np.ndarray] = [np.empty(0)] * len(feeds)
        for k, (arr, dtype) in enumerate(zip(feeds, self._graph_dtypes, strict=True)):
            graph_feeds[self._in_index[k]] = arr if arr.dtype == dtype else arr.astype(dtype)
        t0 = time.perf_counter()
        raw = self.session.run(graph_feeds)
        self._inference_seconds += time.perf_counter() - t0
        return [raw[i] for i in self._out_index]

    def plan(self, shapes: Mapping[str, tuple[int, ...]]) -> TilePlan:
        """The tiling that :meth:`predict` would use for inputs of these shapes."""
        return plan_tiles(
            self.package.spec,
            shapes,
            tile=self.tile,
            max_block_voxels=self.max_block_voxels,
            graph_batch=self._graph_batch,
            batch_voxels=self._batch_voxels,
        )

    def preprocess(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Apply each input's preprocessing with statistics over the whole sample."""
        raw = self._raw_references(inputs)
        return {
            t.id: self._pre[t.id].run(raw[t.id][0], t.axis_ids, reference=raw)
            for t in self.package.spec.inputs
            if t.id in raw
        }

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Apply each output's postprocessing with statistics over the whole sample.

        ``inputs`` are the unprocessed inputs: a ``reference_tensor`` names those.
        """
        references = self._raw_references(inputs)
        for t in self.package.spec.outputs:
            references[t.id] = (outputs[t.id], t.axis_ids)
        return {
            t.id: self._post[t.id].run(outputs[t.id], t.axis_ids, reference=references)
            for t in self.package.spec.outputs
        }

    def _raw_references(
        self, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
        return {
            t.id: (np.asarray(inputs[t.id]), t.axis_ids)
            for t in self.package.spec.inputs
            if t.id in inputs
        }

    def predict(
        self, inputs: Mapping[str, np.ndarray], *, cancelled: Callable[[], bool] | None = None
    ) -> SampleResult:
        """Predict one sample given as arrays in the model's input axis order.

        The batch axis (if the model has one) must have size 1.
        """
        steps = self.iter_predict(inputs, cancelled=cancelled)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                result: SampleResult = stop.value
                return result

    def iter_predict(
        self, inputs: Mapping[str, np.ndarray], *, cancelled: Callable[[], bool] | None = None
    ) -> Generator[tuple[int, int], None, SampleResult]:
        """Like :meth:`predict`, yielding ``(blocks done, blocks total)`` as it goes."""
        spec = self.package.spec
        start = time.perf_counter()
        self._inference_seconds = 0.0
        for t in spec.inputs:
            if t.id not in inputs:
                if t.optional:
                    continue
                raise ShapeError(f"missing input tensor {t.id!r}")
            _check_rank(t, inputs[t.id])
        pre = self.preprocess(inputs)
        plan = self.plan({k: v.shape for k, v in pre.items()})
        raw = yield from iter_tiled(
            spec, pre, plan, self._run_batch, pad_mode=self.pad_mode, cancelled=cancelled
        )
        post = self.postprocess(raw, inputs)
        return SampleResult(
            outputs=post,
            plan=plan,
            seconds=time.perf_counter() - start,
            inference_seconds=self._inference_seconds,
        )


def _check_rank(tensor: TensorSpec, array: np.ndarray) -> None:
    if array.ndim != len(tensor.axes):
        raise ShapeError(
            f"input {tensor.id!r} needs {len(tensor.axes)} dimensions "
            f"({tensor.axes_letters}), got an array of shape {array.shape}"
        )
    for ax, n in zip(tensor.axes, array.shape, strict=True):
        if ax.kind == "batch" and n != 1:
            raise ShapeError(f"input {tensor.id!r}: one sample at a time (batch of {n} given)")
