"""The engine services the desktop application uses, in one object.

Widgets receive a :class:`Services` in their constructor and call it; it only
forwards to the Qt-free core (:mod:`zoodesk.models`, :mod:`zoodesk.batch`,
:mod:`zoodesk.inference`, :mod:`zoodesk.instances`, :mod:`zoodesk.export`) with the
current settings, and
keeps loaded packages and predictors so that repeated previews do not reload the
model.  Nothing here imports Qt; core modules are imported on first use so that
the window opens before the engine is loaded.  Tests build one on a temporary
ZOODESK_HOME.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoodesk.errors import ZooDeskError
from zoodesk.settings import Settings, load_settings, save_settings

if TYPE_CHECKING:
    from zoodesk.batch.earlier import EarlierRun
    from zoodesk.batch.objects import MeasureEvent, ObjectTable, RunMeasurements
    from zoodesk.batch.preview import InputInfo
    from zoodesk.batch.record import RunRecord
    from zoodesk.batch.runner import Event, PredictionRequest
    from zoodesk.cluster.address import ClusterAddress
    from zoodesk.export.study import StudyMetadata
    from zoodesk.images import ImageData
    from zoodesk.inference.checks import TestStatus
    from zoodesk.inference.devices import Device
    from zoodesk.inference.predict import Predictor
    from zoodesk.instances import InstanceSettings
    from zoodesk.models import BundleExport, BundleImport, CachedModel
    from zoodesk.models.compat import Capability, Compatibility, Installation
    from zoodesk.models.download import Progress
    from zoodesk.models.library import Library
    from zoodesk.models.package import ModelPackage
    from zoodesk.models.spec import ModelSpec

CancelCheck = Callable[[], bool]


class Services:
    """Entry points to the engine for the GUI (see the module docstring).

    Parameters
    ----------
    settings
        The settings to use (default: :func:`zoodesk.settings.load_settings`).
    log_file
        The log file that error messages point to.
    """

    def __init__(self, settings: Settings | None = None, *, log_file: Path | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.log_file = log_file
        self._lock = threading.Lock()
        self._packages: dict[tuple[Path, int], ModelPackage] = {}
        self._installation: Installation | None = None
        self._predictors: dict[tuple[Path, str, int], Predictor] = {}

    # ------------------------------------------------------------------ settings

    def update_settings(self, settings: Settings) -> Path:
        """Save new settings and use them from now on."""
        path = save_settings(settings)
        self.settings = settings
        with self._lock:
            self._predictors.clear()
        return path

    @property
    def threads(self) -> int | None:
        """ONNX Runtime threads from the settings (None: the runtime chooses)."""
        return self.settings.threads or None

    # -------------------------------------------------------------------- models

    def library(self) -> Library:
        """The built-in, cached and saved-catalogue models (no network)."""
        from zoodesk.models.library import build_library

        return build_library(self.settings)

    def load_package(self, description: Path) -> ModelPackage:
        """Load (validate) a model package; loaded packages are kept while unchanged."""
        from zoodesk.models.package import load_model_package

        path = Path(description)
        key = (path, path.stat().st_mtime_ns if path.exists() else 0)
        with self._lock:
            cached = self._packages.get(key)
        if cached is not None:
            return cached
        package = load_model_package(path)
        with self._lock:
            self._packages[key] = package
        return package

    def compatibility(
        self, package: ModelPackage, formats: Sequence[str] | None = None
    ) -> Compatibility:
        """What ZooDesk can do with a loaded package (its architecture code checked too)."""
        from zoodesk.models.compat import compatibility_of_package

        return compatibility_of_package(package, formats)

    def capability(self, compat: Compatibility) -> Capability:
        """What this installation makes of a model: runs, converts here, needs..."""
        from zoodesk.conversion.launch import installation
        from zoodesk.models.compat import capability_here

        if self._installation is None:
            self._installation = installation()
        return capability_here(compat, self._installation)

    def import_model(self, path: Path) -> CachedModel:
        """Copy a model package (folder, zip or description) into the cache."""
        from zoodesk.models.cache import ModelCache

        return ModelCache.from_settings(self.settings).import_package(path)

    def remove_model(self, key: str) -> CachedModel:
        """Remove a cached model."""
        from zoodesk.models.cache import ModelCache

        return ModelCache.from_settings(self.settings).remove(key)

    def download_model(self, ref: str, cancel: CancelCheck) -> Iterator[Progress[CachedModel]]:
        """Download a zoo model into the cache, as a generator of progress events."""
        from zoodesk.models.download import download_model

        return download_model(ref, settings=self.settings, cancel=cancel)

    def refresh_catalogue(self, cancel: CancelCheck) -> Iterator[Progress[Any]]:
        """Fetch and save the zoo catalogue, as a generator of progress events."""
        from zoodesk.models.catalogue import refresh_catalogue_events

        return refresh_catalogue_events(settings=self.settings, cancel=cancel)

    def export_bundle(self, path: Path, keys: Sequence[str]) -> BundleExport:
        """Write the catalogue and the given cached models into an offline bundle."""
        from zoodesk.models.bundle import export_bundle

        return export_bundle(path, list(keys), settings=self.settings)

    def import_bundle(self, path: Path) -> BundleImport:
        """Install the models (and catalogue) of an offline bundle."""
        from zoodesk.models.bundle import import_bundle

        return import_bundle(path, settings=self.settings)

    def missing_for_archive(self, form: Mapping[str, Any]) -> list[str]:
        """What the BioImage Archive requires that the export form does not give."""
        from pydantic import ValidationError

        from zoodesk.export.bia import missing_for_archive
        from zoodesk.export.study import StudyMetadata

        try:
            study = StudyMetadata.model_validate(dict(form))
        except ValidationError:
            return []  # the form shows its own errors (an ORCID, say) on export
        return missing_for_archive(study)

    def conversion_unavailable(self, weights_format: str) -> str | None:
        """None when this installation converts such weights, else one line saying why."""
        from zoodesk.conversion.launch import can_convert, missing_framework_hint

        return None if can_convert(weights_format) else missing_framework_hint(weights_format)

    def code_to_run(self, package: ModelPackage) -> str | None:
        """The code a conversion of the package would execute (state dicts), else None."""
        from zoodesk.conversion.pipeline import architecture_code

        return architecture_code(package)

    def convert_model(
        self, key: str, *, trust_code: bool, cancel: CancelCheck
    ) -> Iterator[Progress[Any]]:
        """Convert a cached model's weights to ONNX and run its test (generator)."""
        from zoodesk.conversion.pipeline import convert_model

        return convert_model(key, trust_code=trust_code, settings=self.settings, cancel=cancel)

    def run_test(self, package: ModelPackage, device: str) -> TestStatus:
        """Run the model's reproducibility test, remember and return the outcome."""
        from zoodesk.inference.checks import record_test_report
        from zoodesk.inference.reproducibility import run_reproducibility_test

        predictor = self.predictor(package, device)
        report = run_reproducibility_test(package, predictor=predictor)
        return record_test_report(package, report, self.settings)

    def test_status(self, description: Path) -> TestStatus | None:
        """The last reproducibility-test outcome of this description, if any."""
        from zoodesk.inference.checks import last_test_status

        return last_test_status(description, self.settings)

    # --------------------------------------------------------------------- batch

    def devices(self) -> list[Device]:
        """The execution devices the installed runtime offers, best first."""
        from zoodesk.inference.devices import available_devices

        return available_devices()

    def demo_model_path(self) -> Path:
        """The built-in demo model's description."""
        from zoodesk.demo import demo_model_path

        return demo_model_path()

    def demo_images_dir(self) -> Path:
        """The folder of the built-in sample images."""
        from zoodesk.demo import demo_images_dir

        return demo_images_dir()

    def predictor(self, package: ModelPackage, device: str) -> Predictor:
        """A predictor for the package on the device, created once and reused."""
        from zoodesk.inference.predict import Predictor

        path = package.description_path
        key = (path, device, path.stat().st_mtime_ns)
        with self._lock:
            found = self._predictors.get(key)
        if found is not None:
            return found
        predictor = Predictor(package, device=device, threads=self.threads)
        with self._lock:
            self._predictors[key] = predictor
        return predictor

    def scan_inputs(
        self,
        inputs: Sequence[Path],
        *,
        patterns: Sequence[str],
        recursive: bool,
        package: ModelPackage | None,
        axes: str | None,
        channels: Sequence[int] | None,
        cancel: CancelCheck,
        scenes: Sequence[str] = (),
    ) -> Iterator[InputInfo]:
        """The files a batch would process, with their axes, sizes and fit to the model."""
        from zoodesk.batch.preview import required_input, scan_inputs

        tensor = required_input(package.spec) if package is not None else None
        return scan_inputs(
            inputs,
            patterns=patterns,
            recursive=recursive,
            tensor=tensor,
            axes=axes,
            channels=channels,
            cancelled=cancel,
            scenes=scenes,
        )

    def model_expectations(self, package: ModelPackage) -> list[str]:
        """What the model's image input expects, one line per axis."""
        from zoodesk.batch.preview import describe_axis, required_input

        return [describe_axis(a) for a in required_input(package.spec).axes]

    def preview(
        self,
        package: ModelPackage,
        device: str,
        path: Path,
        *,
        axes: str | None,
        channels: Sequence[int] | None,
        region: tuple[int, int, int, int] | None,
        cancel: CancelCheck,
        series: int = 0,
    ) -> Iterator[Any]:
        """Run the model on one image or a region of it (generator; returns a
        :class:`zoodesk.batch.preview.PreviewResult`)."""
        from zoodesk.batch.preview import run_preview

        return run_preview(
            self.predictor(package, device),
            path,
            series=series,
            axes=axes,
            channels=channels,
            region=region,
            cancelled=cancel,
        )

    def run_prediction(
        self, request: PredictionRequest, cancel: CancelCheck, cluster: str = ""
    ) -> Iterator[Event]:
        """A batch run, as the runner's generator of events; with ``cluster``
        (``local:N`` or a scheduler's address), on that Dask cluster's workers."""
        from zoodesk.cluster.address import cluster_choice

        where = cluster_choice(cluster)
        if where is None:
            from zoodesk.batch.runner import run_prediction

            return run_prediction(request, cancelled=cancel)
        return _run_on_cluster(where, request, cancel)

    def cluster_choices(self) -> list[tuple[str, str]]:
        """Where a batch can run: ``(label, value)``, the setting's choice first."""
        import os

        from zoodesk.cluster.address import cluster_choice

        choices = [("This computer", "")]
        cores = os.cpu_count() or 1
        if cores > 1:
            choices.append((f"{cores} worker processes here (local:{cores})", f"local:{cores}"))
        setting = self.settings.cluster.strip()
        try:
            chosen = cluster_choice(setting)
        except ZooDeskError:
            chosen = None
        if chosen is not None and str(chosen) not in [v for _l, v in choices]:
            label = (
                f"{chosen.workers} worker processes here ({chosen})"
                if chosen.is_local
                else f"Cluster {chosen}"
            )
            choices.append((label, str(chosen)))
        if chosen is not None:
            choices.sort(key=lambda c: c[1] != str(chosen))
        return choices

    def default_output_folder(self, first_input: Path, *, samples: Path | None, stamp: str) -> Path:
        """The output folder that goes with the inputs (see
        :func:`zoodesk.batch.outfolder.default_output_folder`)."""
        from zoodesk.batch.outfolder import default_output_folder

        return default_output_folder(
            first_input, samples=samples, home=self.settings.home, stamp=stamp
        )

    def earlier_run(self, request: PredictionRequest, package: ModelPackage) -> EarlierRun | None:
        """The run already in the request's output folder, seen from this request."""
        from zoodesk.batch.earlier import find_earlier_run

        return find_earlier_run(request, package)

    def fresh_folder(self, folder: Path) -> Path:
        """A sibling of ``folder`` that does not exist yet."""
        from zoodesk.batch.earlier import fresh_folder

        return fresh_folder(folder)

    def prediction_request(self, **fields: Any) -> PredictionRequest:
        """Build the runner's request (threads from the settings)."""
        from zoodesk.batch.runner import PredictionRequest

        fields.setdefault("threads", self.threads)
        return PredictionRequest(**fields)

    # ------------------------------------------------------------------- results

    def load_record(self, path: Path) -> RunRecord:
        """Read a run record (``zoodesk-run.json``, or the folder holding one)."""
        from zoodesk.batch.record import RECORD_NAME, RunRecord

        path = Path(path)
        if path.is_dir():
            path = path / RECORD_NAME
        return RunRecord.load(path)

    def read_image(self, path: Path, series: int = 0, *, lazy: bool = False) -> ImageData:
        """Read an image (one series of a multi-series file) with its axes and metadata;
        ``lazy`` opens it to be read plane by plane (compressed TIFF tile by tile,
        OME-Zarr chunk by chunk) rather than decoded whole."""
        from zoodesk.images import fold_colour_samples, read_image

        image = read_image(Path(path), series=series, lazy=lazy, tiles=lazy)
        return fold_colour_samples(image)

    # ------------------------------------------------------------------- objects

    def propose_instances(self, spec: ModelSpec) -> tuple[InstanceSettings | None, str]:
        """The object method that suits the model's outputs, and why."""
        from zoodesk.instances import propose

        return propose(spec)

    def resolve_instances(
        self, spec: ModelSpec, choice: str, overrides: Mapping[str, Any]
    ) -> InstanceSettings:
        """Object settings for ``choice`` (a method or ``auto``) with the user's values,
        checked against the model (raises :class:`InstanceSettingsError`)."""
        from zoodesk.instances import resolve

        return resolve(spec, choice, overrides)[0]

    def instance_settings(self, data: Mapping[str, Any]) -> InstanceSettings:
        """Object settings from a dict (a run record's), checked on their own."""
        from zoodesk.instances import InstanceSettings

        return InstanceSettings.from_dict(data)

    def instance_method_unavailable(self, method: str) -> str | None:
        """None when this installation makes objects with ``method``, else why not."""
        from zoodesk.instances import method_unavailable

        return method_unavailable(method)

    def run_model_spec(self, record: RunRecord) -> ModelSpec | None:
        """The description of the model that made a run, if it can still be loaded."""
        from zoodesk.batch.objects import run_model_spec

        return run_model_spec(record)

    def object_table(self, record: RunRecord, index: int) -> ObjectTable | None:
        """The objects table of the run's ``index``-th input (None: it has no objects)."""
        from zoodesk.batch.objects import object_table

        return object_table(record, record.files[index])

    def run_measurements(self, record: RunRecord) -> RunMeasurements:
        """Every object's measurements over the whole run."""
        from zoodesk.batch.objects import run_measurements

        return run_measurements(record)

    def measure_run(
        self,
        run_dir: Path,
        choice: str | None,
        overrides: Mapping[str, Any],
        cancel: CancelCheck,
    ) -> Iterator[MeasureEvent]:
        """Remake the objects of a finished run without the model (generator of events)."""
        from zoodesk.batch.objects import measure_run

        return measure_run(Path(run_dir), choice, overrides, cancelled=cancel)

    # -------------------------------------------------------------------- export

    def export_available(self) -> str | None:
        """None when deposition export works in this installation, else why not."""
        try:
            import zoodesk.export.package
            import zoodesk.export.study  # noqa: F401
        except ImportError as exc:
            return f"the export service is not available ({exc})"
        return None

    def last_study(self) -> StudyMetadata | None:
        """The study metadata used in the last export, if any."""
        from zoodesk.export.study import load_last_study_metadata

        return load_last_study_metadata()

    def study_from_form(self, data: dict[str, Any]) -> StudyMetadata:
        """Validate the form's fields into study metadata (raises a readable error)."""
        from zoodesk.export.study import study_from_dict

        return study_from_dict(data, "study form")

    def export_run(
        self,
        run_dir: Path,
        destination: Path,
        study: StudyMetadata,
        *,
        include_images: bool,
        overwrite: bool,
        cancel: CancelCheck,
    ) -> Iterator[Any]:
        """Write the deposition package of a run (generator of export events).

        The study metadata is remembered first, so the next export's form starts
        from it even if this one fails.
        """
        from zoodesk.export.package import ExportRequest, export_run
        from zoodesk.export.study import save_last_study_metadata

        save_last_study_metadata(study)
        request = ExportRequest(
            run_dir=Path(run_dir),
            destination=Path(destination),
            inputs="include" if include_images else "reference",
            study=study,
            overwrite=overwrite,
        )
        return export_run(request, cancelled=cancel)


def _run_on_cluster(
    where: ClusterAddress, request: PredictionRequest, cancel: CancelCheck
) -> Iterator[Event]:
    from zoodesk.cluster import run_elsewhere

    with run_elsewhere(where)(request, cancel) as events:
        yield from events
